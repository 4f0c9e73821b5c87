//! A small ordered map for the client's keyed state (channels, outstanding requests).

/// An ordered map over a sorted vector: lookups by binary search, iteration in key order
/// (the same order as a `BTreeMap`'s, so outputs stay deterministic).
///
/// A vector rather than a `BTreeMap`: the client's maps are small (requests are capped at
/// `MAX_OUTSTANDING_REQUESTS`, channels are what the application attached, ids grow so an
/// insert is mostly a push), and every `BTreeMap` key and value type costs the browser
/// client's wasm several KiB of monomorphized tree code.
#[derive(Clone, Debug)]
pub(crate) struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> VecMap<K, V> {
        VecMap(Vec::new())
    }
}

impl<K: Ord, V> VecMap<K, V> {
    fn find(&self, key: &K) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = self.find(key).ok()?;
        Some(&mut self.0[at].1)
    }

    /// The value under `key`, inserted by `make` when absent.
    pub(crate) fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let at = match self.find(&key) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (key, make()));
                at
            }
        };
        &mut self.0[at].1
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|(_, v)| v)
    }

    /// Keeps the entries for which `keep` says true, in order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.0.retain_mut(|(k, v)| keep(k, v));
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn insert(&mut self, key: K, value: V) {
        match self.find(&key) {
            Ok(at) => self.0[at].1 = value,
            Err(at) => self.0.insert(at, (key, value)),
        }
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let at = self.find(key).ok()?;
        Some(self.0.remove(at).1)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Every entry, in key order, leaving the map empty.
    pub(crate) fn take(&mut self) -> Vec<(K, V)> {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::VecMap;

    #[test]
    fn entries_stay_in_key_order_whatever_the_insertion_order() {
        let mut map = VecMap::default();
        for key in [5u64, 1, 9, 3] {
            map.insert(key, key * 10);
        }
        map.insert(3, 31);
        assert_eq!(map.len(), 4);
        assert_eq!(map.remove(&9), Some(90));
        assert_eq!(map.remove(&9), None);
        let keys: Vec<u64> = map.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec![1, 3, 5]);
        assert_eq!(map.values().copied().collect::<Vec<_>>(), vec![10, 31, 50]);
        *map.get_or_insert_with(4, || 40) += 1;
        *map.get_or_insert_with(4, || 0) += 1;
        assert_eq!(map.get_mut(&4).copied(), Some(42));
        map.retain(|k, _| *k != 4);
        for v in map.values_mut() {
            *v += 0;
        }
        assert_eq!(map.take(), vec![(1, 10), (3, 31), (5, 50)]);
        assert_eq!(map.len(), 0);
    }
}
