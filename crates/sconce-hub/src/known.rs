//! The published checkpoints sconce knows: architecture, class count, evaluation preprocessing
//! and the key map each needs to load into sconce's (torchvision/timm) names.

use sconce_layers::KeyRule;

/// How a checkpoint spells its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// torchvision == timm names (sconce's own): no rewriting.
    Timm,
    /// Old torchvision DenseNet files (and smp's densenet121 encoder): `denselayerN.norm.1` for
    /// `norm1`, `conv.2` for `conv2`.
    TorchvisionLegacyDenseNet,
    /// Hugging Face transformers' `ResNetForImageClassification` (`microsoft/resnet-50`).
    Transformers,
}

impl Naming {
    /// The key rules that turn this naming into sconce's.
    pub fn rules(self) -> Vec<KeyRule> {
        match self {
            Naming::Timm => Vec::new(),
            Naming::TorchvisionLegacyDenseNet => ["norm", "conv"]
                .iter()
                .flat_map(|m| (1..=2).map(move |i| KeyRule::replace(format!(".{m}.{i}."), format!(".{m}{i}."))))
                .collect(),
            Naming::Transformers => {
                let mut r = vec![
                    KeyRule::prefix("resnet.embedder.embedder.convolution.", "conv1."),
                    KeyRule::prefix("resnet.embedder.embedder.normalization.", "bn1."),
                    KeyRule::prefix("classifier.1.", "fc."),
                ];
                for s in 0..4 {
                    r.push(KeyRule::prefix(format!("resnet.encoder.stages.{s}.layers."), format!("layer{}.", s + 1)));
                }
                r.push(KeyRule::replace(".shortcut.convolution.", ".downsample.0."));
                r.push(KeyRule::replace(".shortcut.normalization.", ".downsample.1."));
                for k in 0..3 {
                    r.push(KeyRule::replace(format!(".layer.{k}.convolution."), format!(".conv{}.", k + 1)));
                    r.push(KeyRule::replace(format!(".layer.{k}.normalization."), format!(".bn{}.", k + 1)));
                }
                r
            }
        }
    }
}

/// One known checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownWeights {
    /// `ORG/NAME` on the hub.
    pub repo: &'static str,
    /// Revision to fetch (`main`, or the commit smp pins).
    pub revision: &'static str,
    /// sconce architecture (`sconce_backbones::create_model` name).
    pub arch: &'static str,
    /// Classifier outputs in the file (0: an encoder without a classifier).
    pub num_classes: usize,
    /// Key spelling.
    pub naming: Naming,
    /// Evaluation input size.
    pub input_size: usize,
    /// Centre-crop fraction.
    pub crop_pct: f64,
    /// `bilinear` or `bicubic`.
    pub interpolation: &'static str,
}

#[allow(clippy::too_many_arguments)] // a row constructor for the table below
const fn w(
    repo: &'static str,
    revision: &'static str,
    arch: &'static str,
    num_classes: usize,
    naming: Naming,
    input_size: usize,
    crop_pct: f64,
    interpolation: &'static str,
) -> KnownWeights {
    KnownWeights { repo, revision, arch, num_classes, naming, input_size, crop_pct, interpolation }
}

/// The checkpoints of the practitioners' questions (values from timm 1.0.31's
/// `pretrained_cfg` and smp 0.6.0's pinned encoder revisions; ImageNet mean/std for all).
pub const KNOWN_WEIGHTS: &[KnownWeights] = &[
    w("timm/resnet50.a1_in1k", "main", "resnet50", 1000, Naming::Timm, 224, 0.95, "bicubic"),
    w("timm/resnet50.tv_in1k", "main", "resnet50", 1000, Naming::Timm, 224, 0.875, "bilinear"),
    w("timm/resnet50.tv2_in1k", "main", "resnet50", 1000, Naming::Timm, 224, 0.965, "bilinear"),
    w("timm/densenet121.tv_in1k", "main", "densenet121", 1000, Naming::Timm, 224, 0.875, "bicubic"),
    w("timm/densenet121.ra_in1k", "main", "densenet121", 1000, Naming::Timm, 224, 0.875, "bicubic"),
    w("microsoft/resnet-50", "main", "resnet50", 1000, Naming::Transformers, 224, 0.875, "bicubic"),
    w(
        "smp-hub/resnet50.imagenet",
        "00cb74e366966d59cd9a35af57e618af9f88efe9",
        "resnet50",
        0,
        Naming::Timm,
        224,
        0.875,
        "bilinear",
    ),
    w(
        "smp-hub/densenet121.imagenet",
        "a17c96896a265b61338f66f61d3887b24f61995a",
        "densenet121",
        0,
        Naming::TorchvisionLegacyDenseNet,
        224,
        0.875,
        "bilinear",
    ),
];

/// The known checkpoint of `repo`, if any.
pub fn known_weights(repo: &str) -> Option<&'static KnownWeights> {
    KNOWN_WEIGHTS.iter().find(|k| k.repo == repo)
}
