//! LIBSVM's kernel cache: an LRU list of (partially filled) `f32` Q-columns within a byte budget.

/// Columns `0..l`, each cached for its first `len` entries; least recently used evicted first.
pub(crate) struct Cache {
    data: Vec<Vec<f32>>,
    /// Cached length per column (0 = not cached).
    len: Vec<usize>,
    /// Doubly linked LRU ring; node `l` is the sentinel.
    prev: Vec<usize>,
    next: Vec<usize>,
    /// Free space in floats.
    free: usize,
    /// Position swaps not yet applied inside the cached columns (see [`Cache::flush`]).
    pending: Vec<(usize, usize)>,
}

impl Cache {
    /// A cache for `l` columns within `bytes` (at least two full columns, as LIBSVM).
    pub(crate) fn new(l: usize, bytes: usize) -> Self {
        let floats = bytes / std::mem::size_of::<f32>();
        // LIBSVM subtracts its per-column header (three pointers and an int) from the budget.
        let header = l * 32 / std::mem::size_of::<f32>();
        let free = floats.max(2 * l + header) - header;
        Self {
            data: vec![Vec::new(); l],
            len: vec![0; l],
            prev: vec![l; l + 1],
            next: vec![l; l + 1],
            free,
            pending: Vec::new(),
        }
    }

    fn unlink(&mut self, h: usize) {
        let (p, n) = (self.prev[h], self.next[h]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn push_back(&mut self, h: usize) {
        let s = self.len.len();
        let last = self.prev[s];
        self.next[h] = s;
        self.prev[h] = last;
        self.next[last] = h;
        self.prev[s] = h;
    }

    fn evict(&mut self, h: usize) {
        self.unlink(h);
        self.free += self.len[h];
        self.data[h] = Vec::new();
        self.len[h] = 0;
    }

    /// Makes column `index` hold `len` entries; returns the position from which the caller
    /// must fill it (`>= len` when it is complete). The column becomes most recently used.
    pub(crate) fn get(&mut self, index: usize, len: usize) -> usize {
        self.flush();
        if self.len[index] > 0 {
            self.unlink(index);
        }
        let have = self.len[index];
        if len > have {
            let more = len - have;
            let s = self.len.len();
            while self.free < more {
                let old = self.next[s];
                if old == s {
                    break;
                }
                self.evict(old);
            }
            // Exact growth: a doubling reserve could hold up to twice the budget.
            let d = &mut self.data[index];
            d.reserve_exact(len - d.len());
            d.resize(len, 0.0);
            self.free = self.free.saturating_sub(more);
            self.len[index] = len;
        }
        self.push_back(index);
        have.min(len)
    }

    /// The cached entries of column `index`.
    pub(crate) fn column(&self, index: usize) -> &[f32] {
        debug_assert!(self.pending.is_empty(), "flush the cache before reading columns");
        &self.data[index][..self.len[index]]
    }

    /// Mutable access to column `index` (to fill it after [`Cache::get`]).
    pub(crate) fn column_mut(&mut self, index: usize) -> &mut [f32] {
        let n = self.len[index];
        &mut self.data[index][..n]
    }

    /// Swaps the roles of positions `i` and `j` in every cached column (LIBSVM's `swap_index`).
    ///
    /// The column heads move at once; the entries inside the cached columns are swapped by
    /// [`Cache::flush`], which replays all pending swaps column by column — one pass per
    /// column in cache-friendly order instead of touching every column for every swap (what
    /// LIBSVM does). The result, including which columns are dropped and the LRU order, is the
    /// same.
    pub(crate) fn swap_index(&mut self, i: usize, j: usize) {
        if i == j {
            return;
        }
        if self.len[i] > 0 {
            self.unlink(i);
        }
        if self.len[j] > 0 {
            self.unlink(j);
        }
        self.data.swap(i, j);
        self.len.swap(i, j);
        if self.len[i] > 0 {
            self.push_back(i);
        }
        if self.len[j] > 0 {
            self.push_back(j);
        }
        self.pending.push(if i < j { (i, j) } else { (j, i) });
    }

    /// Applies the pending [`Cache::swap_index`] swaps to the cached columns.
    pub(crate) fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let s = self.len.len();
        let mut h = self.next[s];
        while h != s {
            let nxt = self.next[h];
            for &(lo, hi) in &pending {
                if self.len[h] > lo {
                    if self.len[h] > hi {
                        self.data[h].swap(lo, hi);
                    } else {
                        // LIBSVM gives up on a column that covers one position but not the other.
                        self.evict(h);
                        break;
                    }
                }
            }
            h = nxt;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_budget() {
        // Budget: room for 3 columns of 10 floats beyond the header.
        let l = 10;
        let bytes = (3 * 10 + l * 8) * 4;
        let mut c = Cache::new(l, bytes);
        for col in 0..3 {
            assert_eq!(c.get(col, 10), 0);
            c.column_mut(col).fill(col as f32);
        }
        assert_eq!(c.get(0, 10), 10); // hit, now most recent
        assert_eq!(c.get(3, 10), 0); // evicts column 1 (least recent)
        assert_eq!(c.get(1, 10), 0);
        assert_eq!(c.get(0, 10), 10);
        assert_eq!(c.column(0)[4], 0.0);
        // Partial columns grow.
        let mut c = Cache::new(4, 1 << 20);
        assert_eq!(c.get(2, 2), 0);
        assert_eq!(c.get(2, 4), 2);
    }

    #[test]
    fn memory_stays_within_the_budget() {
        // Columns that grow step by step (partial fills after shrinking) must not over-allocate.
        let l = 300;
        let bytes = (40 * l + l * 8) * 4; // 40 full columns
        let mut c = Cache::new(l, bytes);
        let mut rng = sconce_core::SeededRng::new(5);
        for _ in 0..5000 {
            let i = rng.below(l as u64) as usize;
            let len = 1 + rng.below(l as u64) as usize;
            c.get(i, len);
            let held: usize = c.data.iter().map(Vec::capacity).sum();
            assert!(held <= 40 * l, "{held} floats held for a budget of {}", 40 * l);
        }
    }

    #[test]
    fn swap_index_permutes_cached_entries() {
        let mut c = Cache::new(4, 1 << 20);
        c.get(0, 4);
        c.column_mut(0).copy_from_slice(&[0.0, 1.0, 2.0, 3.0]);
        c.get(1, 2);
        c.column_mut(1).copy_from_slice(&[10.0, 11.0]);
        c.swap_index(1, 3);
        c.flush();
        // Column 0's entries 1 and 3 swapped; column 1 (len 2, covering 1 but not 3) dropped,
        // and column 3 is what column 1 was before the swap (also dropped, as LIBSVM does).
        assert_eq!(c.column(0), &[0.0, 3.0, 2.0, 1.0]);
        assert_eq!(c.get(3, 2), 0);
    }
}
