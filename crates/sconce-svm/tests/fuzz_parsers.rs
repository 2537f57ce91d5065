//! Fuzzing the two file parsers with proptest: arbitrary text and mutations of real LIBSVM
//! data and model files (byte flips, insertions, deletions, truncation, duplicated lines)
//! must give `Ok` or a clear `Err` — never a panic — and whatever parses must behave: a data
//! file re-written and re-read is identical, a model predicts or returns an error.

use proptest::prelude::*;
use sconce_svm::{Features, format_libsvm, format_model, parse_libsvm, parse_model};

const DATA: &str = include_str!("fixtures/iris_mm.libsvm");
const MODELS: [&str; 4] = [
    include_str!("fixtures/csvc_rbf_iris_scale.model"),
    include_str!("fixtures/csvc_rbf_iris_prob.model"),
    include_str!("fixtures/epssvr_poly_diab.model"),
    include_str!("fixtures/csvc_precomputed_iris.model"),
];

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, String),
    Delete(usize, usize),
    Truncate(usize),
    DupLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Flip(p, b)),
        (
            any::<usize>(),
            prop_oneof![
                Just(":".to_string()),
                Just(" ".to_string()),
                Just("\n".to_string()),
                Just("-".to_string()),
                Just("nan".to_string()),
                Just("1e999".to_string()),
                Just("0:".to_string()),
                Just("SV\n".to_string()),
                Just("nr_class 1\n".to_string()),
                Just("total_sv 99999999999\n".to_string()),
                Just("4294967296:1".to_string()),
                "[ -~]{0,12}".prop_map(|s| s),
            ]
        )
            .prop_map(|(p, s)| Edit::Insert(p, s)),
        (any::<usize>(), 0usize..64).prop_map(|(p, n)| Edit::Delete(p, n)),
        any::<usize>().prop_map(Edit::Truncate),
        any::<usize>().prop_map(Edit::DupLine),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut b: Vec<u8> = text.as_bytes().to_vec();
    for e in edits {
        let n = b.len().max(1);
        match e {
            Edit::Flip(p, v) => {
                if !b.is_empty() {
                    let i = p % n;
                    b[i] = *v;
                }
            }
            Edit::Insert(p, s) => {
                let i = p % (b.len() + 1);
                b.splice(i..i, s.bytes());
            }
            Edit::Delete(p, k) => {
                let i = p % n;
                let j = (i + k).min(b.len());
                if i < j {
                    b.drain(i..j);
                }
            }
            Edit::Truncate(p) => b.truncate(p % n),
            Edit::DupLine(p) => {
                let s = String::from_utf8_lossy(&b).into_owned();
                let lines: Vec<&str> = s.split('\n').collect();
                let i = p % lines.len();
                let mut out: Vec<&str> = lines.clone();
                out.insert(i, lines[i]);
                b = out.join("\n").into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn check_data(text: &str) {
    for zero in [false, true] {
        if let Ok(d) = parse_libsvm(text, "fuzz", zero) {
            assert_eq!(d.x.rows(), d.y.len());
            let again = parse_libsvm(&format_libsvm(&d.x, &d.y), "fuzz", zero).expect("re-read");
            assert_eq!(again, d);
        }
    }
}

fn check_model(text: &str) {
    if let Ok(m) = parse_model(text, "fuzz") {
        let again = parse_model(&format_model(&m), "fuzz").expect("a written model reads back");
        assert_eq!(format_model(&again), format_model(&m));
        let x =
            Features::dense(3, 4, vec![0.1, -0.2, 0.3, 0.4, 1.0, 0.0, -1.0, 0.5, 0.0, 0.0, 0.0, 0.0]).expect("finite");
        let _ = m.predict(&x);
        let _ = m.decision_values(&x);
        let _ = m.predict_probability(&x);
    }
}

proptest! {
    // 4000 cases per property in CI; PROPTEST_CASES=N for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        check_data(&s);
        check_model(&s);
    }

    #[test]
    fn mutated_data_files_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        check_data(&apply(DATA, &edits));
    }

    #[test]
    fn mutated_model_files_never_panic(which in 0usize..4, edits in prop::collection::vec(edit(), 1..6)) {
        check_model(&apply(MODELS[which], &edits));
    }
}
