//! Datasets and transforms: folders read back what was written and name the file on bad
//! input; geometric transforms move image and mask together; synthetic data is deterministic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};
use sconce_core::{Error, SeededRng};
use sconce_data::{
    Dataset, ImageFolder, LabelFormat, Letters, LettersConfig, Loader, LoaderConfig, MaskFolder, MaskFormat,
    MaskMapping, Pipeline, Sample, SyntheticConfig, SyntheticShapes, Target, Transform, save_png,
};

fn tmp(name: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("sconce-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn write_pair(root: &Path, name: &str, h: usize, w: usize, mask_on: f32) -> Result<()> {
    std::fs::create_dir_all(root.join("images"))?;
    std::fs::create_dir_all(root.join("masks"))?;
    let img: Vec<f32> = (0..3 * h * w).map(|i| (i % 7) as f32 / 6.0).collect();
    save_png(&root.join("images").join(format!("{name}.png")), &img, 3, h, w)?;
    let mask: Vec<f32> = (0..h * w).map(|i| if i % w < w / 2 { mask_on } else { 0.0 }).collect();
    save_png(&root.join("masks").join(format!("{name}.png")), &mask, 1, h, w)?;
    Ok(())
}

#[test]
fn mask_folder_reads_pairs_and_maps_255_to_1() -> Result<()> {
    let root = tmp("pairs")?;
    write_pair(&root, "a", 6, 8, 1.0)?;
    write_pair(&root, "b", 6, 8, 1.0)?;
    let ds = MaskFolder::new(&root, MaskMapping::Binary)?;
    assert_eq!(ds.len(), 2);
    let s = ds.get(1)?;
    assert_eq!((s.channels, s.height, s.width), (3, 6, 8));
    let Target::Mask(m) = &s.target else { bail!("no mask") };
    assert_eq!(m[..8], [1, 1, 1, 1, 0, 0, 0, 0]);
    assert!((s.image[1] - 1.0 / 6.0).abs() < 1e-2);
    std::fs::remove_dir_all(root)?;
    Ok(())
}

#[test]
fn mask_folder_errors_name_the_file() -> Result<()> {
    let root = tmp("bad")?;
    write_pair(&root, "a", 6, 8, 0.5)?; // grey 128: not a binary mask
    let ds = MaskFolder::new(&root, MaskMapping::Binary)?;
    let e = ds.get(0).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("a.png") && e.contains("has value 128"), "{e}");

    // An image without a mask.
    save_png(&root.join("images/lonely.png"), &[0.0; 3 * 4], 3, 2, 2)?;
    let e = MaskFolder::new(&root, MaskMapping::Binary).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("lonely.png"), "{e}");
    std::fs::remove_file(root.join("images/lonely.png"))?;

    // Mismatched sizes.
    save_png(&root.join("images/c.png"), &[0.0; 3 * 4], 3, 2, 2)?;
    save_png(&root.join("masks/c.png"), &[0.0; 9], 1, 3, 3)?;
    let ds = MaskFolder::new(&root, MaskMapping::Binary)?;
    let e = ds.get(1).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("c.png") && e.contains("is 3×3 but its image"), "{e}");

    // A corrupt image file.
    std::fs::write(root.join("images/c.png"), b"not a png")?;
    match ds.get(1) {
        Err(Error::Parse { source_name, .. }) => assert!(source_name.ends_with("c.png")),
        other => bail!("expected a parse error, got {other:?}"),
    }
    // Empty and missing folders.
    let empty = tmp("empty")?;
    std::fs::create_dir_all(empty.join("images"))?;
    std::fs::create_dir_all(empty.join("masks"))?;
    assert!(matches!(MaskFolder::new(&empty, MaskMapping::Binary), Err(Error::Data { .. })));
    assert!(matches!(MaskFolder::new(empty.join("nope"), MaskMapping::Binary), Err(Error::Io { .. })));
    std::fs::remove_dir_all(root)?;
    std::fs::remove_dir_all(empty)?;
    Ok(())
}

#[test]
fn image_folder_labels_by_sorted_class_folder() -> Result<()> {
    let root = tmp("classes")?;
    for (c, n) in [("cat", 2), ("dog", 1)] {
        std::fs::create_dir_all(root.join(c))?;
        for i in 0..n {
            save_png(&root.join(c).join(format!("{i}.png")), &[0.5; 3 * 16], 3, 4, 4)?;
        }
    }
    let ds = ImageFolder::new(&root)?;
    assert_eq!(ds.class_names(), Some(vec!["cat".to_string(), "dog".to_string()]));
    assert_eq!(ds.get(2)?.target, Target::Class(1));
    let l = Loader::new(
        Arc::new(ds),
        LoaderConfig { label_format: LabelFormat::OneHot, ..LoaderConfig::new(3, 0) },
        Pipeline::default(),
    )?;
    let b = l.epoch(0).next().transpose()?.ok_or_else(|| anyhow::anyhow!("no batch"))?;
    assert_eq!(b.y.dims(), &[3, 2]);
    assert_eq!(b.y.sum_all()?.to_scalar::<f32>()?, 3.0);
    std::fs::remove_dir_all(root)?;
    Ok(())
}

fn marked() -> Sample {
    // 3×4 image whose value encodes the pixel, mask marking pixel (0, 1).
    let (h, w) = (3, 4);
    let image: Vec<f32> = (0..3 * h * w).map(|i| (i % (h * w)) as f32).collect();
    let mut mask = vec![0u8; h * w];
    mask[1] = 1;
    Sample { image, channels: 3, height: h, width: w, target: Target::Mask(mask) }
}

fn mask_pos(s: &Sample) -> usize {
    match &s.target {
        Target::Mask(m) => m.iter().position(|&v| v == 1).unwrap_or(usize::MAX),
        Target::Class(_) => usize::MAX,
    }
}

#[test]
fn geometric_transforms_move_image_and_mask_together() -> Result<()> {
    let mut rng = SeededRng::new(1);
    for t in [Transform::HFlip(1.0), Transform::VFlip(1.0), Transform::RandomCrop(2, 3), Transform::Rotate90] {
        for _ in 0..4 {
            let s = Pipeline(vec![t.clone()]).apply(marked(), &mut rng)?;
            if let Some(p) = (mask_pos(&s) != usize::MAX).then(|| mask_pos(&s)) {
                // The image pixel under the mask still carries the value of pixel 1.
                assert_eq!(s.image[p], 1.0, "{t:?}");
            }
        }
    }
    let s = Pipeline(vec![Transform::HFlip(1.0)]).apply(marked(), &mut rng)?;
    assert_eq!(mask_pos(&s), 2);
    let s = Pipeline(vec![Transform::Resize(6, 8)]).apply(marked(), &mut rng)?;
    assert_eq!((s.height, s.width), (6, 8));
    let e = Pipeline(vec![Transform::RandomCrop(5, 5)]).apply(marked(), &mut rng).err().map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("does not fit"));
    let n = Pipeline(vec![Transform::Normalize { mean: vec![1.0; 3], std: vec![2.0; 3] }]).apply(marked(), &mut rng)?;
    assert_eq!(n.image[3], 1.0);
    assert!(
        Pipeline(vec![Transform::Normalize { mean: vec![0.0], std: vec![1.0] }]).apply(marked(), &mut rng).is_err()
    );
    Ok(())
}

#[test]
fn synthetic_and_letters_are_deterministic_and_varied() -> Result<()> {
    let cfg = SyntheticConfig { len: 6, size: (40, 36), seed: 3, ..Default::default() };
    let a = SyntheticShapes::new(cfg.clone())?;
    let b = SyntheticShapes::new(cfg)?;
    assert_eq!(a.get(5)?, b.get(5)?);
    assert_ne!(a.get(4)?, a.get(5)?);
    for i in 0..6 {
        let s = a.get(i)?;
        s.validate("synthetic")?;
        let Target::Mask(m) = &s.target else { bail!("no mask") };
        let fg = m.iter().filter(|&&v| v == 1).count() as f64 / m.len() as f64;
        assert!(fg > 0.0 && fg < 0.95, "foreground fraction {fg}");
    }
    assert!(a.get(6).is_err());
    assert!(SyntheticShapes::new(SyntheticConfig { size: (8, 8), ..Default::default() }).is_err());
    let l = Letters::new(LettersConfig { len: 52, ..Default::default() })?;
    assert_ne!(l.get(0)?.image, l.get(26)?.image, "two renderings of A differ");
    let loader = Loader::new(
        Arc::new(SyntheticShapes::new(SyntheticConfig { len: 3, size: (16, 16), ..Default::default() })?),
        LoaderConfig { mask_format: MaskFormat::Index, ..LoaderConfig::new(2, 1) },
        Pipeline::default(),
    )?;
    let b = loader.epoch(0).next().transpose()?.ok_or_else(|| anyhow::anyhow!("no batch"))?;
    assert_eq!(b.y.dims(), &[2, 16, 16]);
    Ok(())
}

fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    palette: bool,
) -> Result<()> {
    let f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(f, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    if palette {
        // Colours unrelated to the indices: the loader must use the indices.
        enc.set_palette(vec![10u8, 20, 30, 200, 0, 0, 0, 200, 0, 0, 0, 200]);
    }
    enc.write_header()?.write_image_data(data)?;
    Ok(())
}

#[test]
fn palette_and_low_bit_masks_give_their_indices_and_colour_masks_are_refused() -> Result<()> {
    let root = tmp("palette")?;
    std::fs::create_dir_all(root.join("images"))?;
    std::fs::create_dir_all(root.join("masks"))?;
    for n in ["p", "g", "rgb"] {
        save_png(&root.join(format!("images/{n}.png")), &[0.5; 3 * 4 * 2], 3, 2, 4)?;
    }
    // 4×2 palette mask, 8-bit indices 0..3.
    write_png(
        &root.join("masks/p.png"),
        4,
        2,
        png::ColorType::Indexed,
        png::BitDepth::Eight,
        &[0, 1, 2, 3, 3, 2, 1, 0],
        true,
    )?;
    // 1-bit grayscale: rows 1010 and 0101 packed MSB first.
    write_png(
        &root.join("masks/g.png"),
        4,
        2,
        png::ColorType::Grayscale,
        png::BitDepth::One,
        &[0b1010_0000, 0b0101_0000],
        false,
    )?;
    write_png(&root.join("masks/rgb.png"), 4, 2, png::ColorType::Rgb, png::BitDepth::Eight, &[0; 24], false)?;
    let ds = MaskFolder::new(&root, MaskMapping::Index(4))?;
    // Sorted by name: g, p, rgb.
    assert_eq!(ds.get(1)?.target, Target::Mask(vec![0, 1, 2, 3, 3, 2, 1, 0]));
    assert_eq!(ds.get(0)?.target, Target::Mask(vec![1, 0, 1, 0, 0, 1, 0, 1]));
    let e = ds.get(2).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("rgb.png") && e.contains("grayscale or palette"), "{e}");
    // Indices beyond the class count are named.
    let e = MaskFolder::new(&root, MaskMapping::Index(3))?.get(1).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("has class 3 but there are 3 classes"), "{e}");
    std::fs::remove_dir_all(root)?;
    Ok(())
}
