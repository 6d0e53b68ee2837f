//! The Merkle tree over a session's entries, hashed as RFC 9162 §2.1 says: a leaf is
//! SHA-256(0x00 ‖ entry hash), an inner node SHA-256(0x01 ‖ left ‖ right). The writer keeps only
//! the right frontier (O(log n) hashes); proofs are computed from all leaves.
use super::canon::{sha256, Hash};
use sha2::{Digest, Sha256};

/// RFC 9162 leaf hash of an entry whose entry hash is `entry_hash`.
pub fn leaf_hash(entry_hash: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry_hash);
    h.finalize().into()
}

/// RFC 9162 inner node hash.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    sha256(b"")
}

/// The perfect subtrees at the right edge of a growing tree: enough to compute its root.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    /// (number of leaves, subtree hash), sizes strictly decreasing powers of two.
    stack: Vec<(u64, Hash)>,
    size: u64,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf given its leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (1u64, leaf);
        while let Some(&(size, left)) = self.stack.last() {
            if size != node.0 {
                break;
            }
            self.stack.pop();
            node = (size * 2, node_hash(&left, &node.1));
        }
        self.stack.push(node);
        self.size += 1;
    }

    /// The tree's root hash (RFC 9162 MTH).
    pub fn root(&self) -> Hash {
        let mut iter = self.stack.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// RFC 9162 MTH over `leaves` (leaf hashes).
pub fn root(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::new();
    for l in leaves {
        f.push(*l);
    }
    f.root()
}

fn split(n: usize) -> usize {
    // Largest power of two smaller than n (n ≥ 2).
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 9162 §2.1.3.1 PATH(m, D[n]): the inclusion proof of leaf `m` in the tree `leaves`.
pub fn inclusion_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = inclusion_proof(m, &leaves[..k]);
        p.push(root(&leaves[k..]));
        p
    } else {
        let mut p = inclusion_proof(m - k, &leaves[k..]);
        p.push(root(&leaves[..k]));
        p
    }
}

/// RFC 9162 §2.1.3.2: the root that `proof` yields for leaf hash `leaf` at `index` in a tree
/// of `size` leaves, or `None` if the proof has the wrong shape.
pub fn root_from_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return None;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    (snode == 0).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n);
                node_hash(&naive(&leaves[..k]), &naive(&leaves[k..]))
            }
        }
    }

    #[test]
    fn frontier_matches_definition_and_proofs_verify() {
        let leaves: Vec<Hash> = (0u32..40)
            .map(|i| leaf_hash(&sha256(&i.to_be_bytes())))
            .collect();
        for n in 0..=leaves.len() {
            let t = &leaves[..n];
            let r = root(t);
            assert_eq!(r, naive(t), "size {n}");
            for m in 0..n {
                let p = inclusion_proof(m, t);
                assert_eq!(
                    root_from_inclusion(m as u64, n as u64, &t[m], &p),
                    Some(r),
                    "size {n} leaf {m}"
                );
                if n > 1 {
                    let other = (m + 1) % n;
                    assert_ne!(
                        root_from_inclusion(other as u64, n as u64, &t[m], &p),
                        Some(r)
                    );
                }
            }
        }
    }
}
