//! The report of matching a weight file's keys against a model's parameters.

use std::fmt;

/// What happened to every key when a weight file was applied to a model.
///
/// Produced by the loaders in `sconce-layers` and `sconce-hub`. Strict loading fails with
/// every problem listed at once (not just the first), carried in [`crate::Error::Weights`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Keys the model asked for and the file provided with the right shape.
    pub loaded: Vec<String>,
    /// Keys the model asked for that the file does not have.
    pub missing: Vec<String>,
    /// Keys in the file that the model did not ask for.
    pub unexpected: Vec<String>,
    /// Keys present in both with different shapes: `(key, expected by model, found in file)`.
    pub shape_mismatch: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Keys deliberately not loaded (e.g. a classifier replaced by a new head).
    pub skipped: Vec<String>,
    /// Keys the file lacks that have a standard value, which was set: BatchNorm's
    /// `num_batches_tracked`, absent from files saved before PyTorch 0.4.1 (and from some
    /// converters), becomes 0 as PyTorch's own loader makes it.
    pub defaulted: Vec<String>,
}

impl LoadReport {
    /// True when nothing is missing, unexpected or mis-shaped.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shape_mismatch.is_empty()
    }

    /// Number of problems (missing + unexpected + mis-shaped keys).
    pub fn num_problems(&self) -> usize {
        self.missing.len() + self.unexpected.len() + self.shape_mismatch.len()
    }

    /// Sorts every list, so reports compare and print deterministically.
    pub fn sort(&mut self) {
        self.loaded.sort();
        self.missing.sort();
        self.unexpected.sort();
        self.shape_mismatch.sort();
        self.skipped.sort();
        self.defaulted.sort();
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} loaded, {} missing, {} unexpected, {} shape mismatches, {} skipped",
            self.loaded.len(),
            self.missing.len(),
            self.unexpected.len(),
            self.shape_mismatch.len(),
            self.skipped.len()
        )?;
        if !self.defaulted.is_empty() {
            write!(f, ", {} set to their default (not in the file)", self.defaulted.len())?;
        }
        for k in &self.missing {
            write!(f, "\n  missing:    {k}")?;
        }
        for k in &self.unexpected {
            write!(f, "\n  unexpected: {k}")?;
        }
        for (k, want, got) in &self.shape_mismatch {
            write!(f, "\n  shape:      {k}: model expects {want:?}, file has {got:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_report_has_no_problems() {
        let mut r = LoadReport { loaded: vec!["a".into()], skipped: vec!["fc.weight".into()], ..Default::default() };
        assert!(r.is_clean());
        assert_eq!(r.num_problems(), 0);
        r.missing.push("b".into());
        assert!(!r.is_clean());
        r.shape_mismatch.push(("c".into(), vec![1], vec![2]));
        assert_eq!(r.num_problems(), 2);
    }

    #[test]
    fn display_lists_each_problem_on_its_own_line() {
        let r = LoadReport {
            missing: vec!["x".into()],
            unexpected: vec!["y".into()],
            shape_mismatch: vec![("z".into(), vec![2, 3], vec![3, 2])],
            ..Default::default()
        };
        let s = r.to_string();
        assert_eq!(s.lines().count(), 4);
        assert!(s.contains("z: model expects [2, 3], file has [3, 2]"));
    }

    #[test]
    fn sort_orders_all_lists() {
        let mut r = LoadReport { missing: vec!["b".into(), "a".into()], ..Default::default() };
        r.sort();
        assert_eq!(r.missing, vec!["a".to_string(), "b".to_string()]);
    }
}
