//! RFC 6962 / RFC 9162 Merkle tree with SHA-256 over the events' blake3 hashes.
//!
//! Standard on purpose: any transparency-log client can check our proofs. The tree is kept
//! as its complete subtrees (node `(level, index)` covers leaves
//! `[index·2^level, (index+1)·2^level)`), written once when they complete, so a proof for
//! any past tree size reads O(log² n) nodes; the store keeps the upper levels and rebuilds
//! the few lowest from the events (see `store::MERKLE_STORED_FROM`).

use sha2::{Digest as _, Sha256};

/// A SHA-256 node hash.
pub type Node = [u8; 32];

pub fn leaf_hash(event_hash: &[u8; 32]) -> Node {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(event_hash);
    h.finalize().into()
}

pub fn node_hash(left: &Node, right: &Node) -> Node {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// SHA-256 of the empty string: the root of the empty tree.
pub fn empty_root() -> Node {
    Sha256::digest([]).into()
}

/// The right edge of the tree: one complete subtree per set bit of the size, largest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Node>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Rebuilds the frontier of a tree of `size` from stored complete subtrees.
    pub fn load<S: NodeSource>(size: u64, src: &S) -> Result<Frontier, S::Error> {
        let mut nodes = Vec::new();
        let mut start = 0u64;
        for level in (0..64).rev() {
            if size & (1 << level) != 0 {
                nodes.push(src.node(level, start >> level)?);
                start += 1 << level;
            }
        }
        Ok(Frontier { size, nodes })
    }

    /// Appends a leaf; calls `store` for every subtree of two or more leaves it completes
    /// (leaves are not stored: each is its event's hash, hashed once more).
    pub fn push(&mut self, leaf: Node, mut store: impl FnMut(u8, u64, &Node)) {
        let index = self.size;
        let mut node = leaf;
        let mut level = 0u8;
        while (index >> level) & 1 == 1 {
            let left = self.nodes.pop().expect("a set bit has a frontier node");
            node = node_hash(&left, &node);
            level += 1;
            store(level, index >> level, &node);
        }
        self.nodes.push(node);
        self.size += 1;
    }

    pub fn root(&self) -> Node {
        let mut iter = self.nodes.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(last) => iter.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

/// Where complete subtree hashes are read from (the redb table, or memory in tests).
pub trait NodeSource {
    type Error;
    fn node(&self, level: u8, index: u64) -> Result<Node, Self::Error>;
}

fn largest_power_of_two_below(n: u64) -> u64 {
    debug_assert!(n > 1);
    1 << (63 - (n - 1).leading_zeros())
}

/// MTH(D[start..end]) where `start` is a multiple of the largest power of two below `end-start`.
pub fn range_hash<S: NodeSource>(src: &S, start: u64, end: u64) -> Result<Node, S::Error> {
    let n = end - start;
    if n.is_power_of_two() {
        let level = n.trailing_zeros() as u8;
        return src.node(level, start >> level);
    }
    let k = largest_power_of_two_below(n);
    Ok(node_hash(
        &range_hash(src, start, start + k)?,
        &range_hash(src, start + k, end)?,
    ))
}

/// PATH(index, D[size]), lowest sibling first. Requires index < size.
pub fn inclusion_proof<S: NodeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Node>, S::Error> {
    let mut proof = Vec::new();
    path(src, index, 0, size, &mut proof)?;
    Ok(proof)
}

fn path<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Node>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = largest_power_of_two_below(n);
    if m < k {
        path(src, m, start, start + k, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        path(src, m - k, start + k, end, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// PROOF(size1, D[size2]). Requires 0 < size1 <= size2.
pub fn consistency_proof<S: NodeSource>(
    src: &S,
    size1: u64,
    size2: u64,
) -> Result<Vec<Node>, S::Error> {
    let mut proof = Vec::new();
    if size1 < size2 {
        subproof(src, size1, 0, size2, true, &mut proof)?;
    }
    Ok(proof)
}

fn subproof<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    complete: bool,
    out: &mut Vec<Node>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(range_hash(src, start, end)?);
        }
        return Ok(());
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        subproof(src, m, start, start + k, complete, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        subproof(src, m - k, start + k, end, false, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// Why a proof does not check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("proof has {got} hashes, {want} expected")]
    WrongLength { got: usize, want: usize },
    #[error("size1 {size1} is larger than size2 {size2}")]
    SizesReversed { size1: u64, size2: u64 },
    #[error("a consistency proof from the empty tree proves nothing")]
    FromEmptyTree,
    #[error("equal tree sizes take an empty proof and equal roots")]
    EqualSizes,
    #[error("[{start}, {end}) is not a subtree of a tree of size {size}")]
    InvalidSubtree { start: u64, end: u64, size: u64 },
    #[error("the proof leads to a different root")]
    RootMismatch,
}

fn check_root(calculated: Node, expected: &Node) -> Result<(), ProofError> {
    if &calculated == expected {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

fn inner_proof_size(index: u64, size: u64) -> usize {
    (64 - (index ^ (size - 1)).leading_zeros()) as usize
}

fn chain_inner(mut seed: Node, proof: &[Node], index: u64) -> Node {
    for (i, h) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 {
            node_hash(&seed, h)
        } else {
            node_hash(h, &seed)
        };
    }
    seed
}

fn chain_inner_right(mut seed: Node, proof: &[Node], index: u64) -> Node {
    for (i, h) in proof.iter().enumerate() {
        if (index >> i) & 1 == 1 {
            seed = node_hash(h, &seed);
        }
    }
    seed
}

fn chain_border_right(seed: Node, proof: &[Node]) -> Node {
    proof.iter().fold(seed, |acc, h| node_hash(h, &acc))
}

/// The root an inclusion proof leads to (RFC 9162 §2.1.3.2).
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf: &Node,
    proof: &[Node],
) -> Result<Node, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let inner = inner_proof_size(index, size);
    let border = (index >> inner).count_ones() as usize;
    if proof.len() != inner + border {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: inner + border,
        });
    }
    let res = chain_inner(*leaf, &proof[..inner], index);
    Ok(chain_border_right(res, &proof[inner..]))
}

pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Node,
    proof: &[Node],
    root: &Node,
) -> Result<(), ProofError> {
    check_root(root_from_inclusion(index, size, leaf, proof)?, root)
}

/// Checks that the tree of `size1` with `root1` is a prefix of the tree of `size2` with
/// `root2` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Node],
    root1: &Node,
    root2: &Node,
) -> Result<(), ProofError> {
    if size2 < size1 {
        return Err(ProofError::SizesReversed { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() || root1 != root2 {
            return Err(ProofError::EqualSizes);
        }
        return Ok(());
    }
    let inner_full = inner_proof_size(size1 - 1, size2);
    let border = ((size1 - 1) >> inner_full).count_ones() as usize;
    let shift = size1.trailing_zeros() as usize;
    let inner = inner_full - shift;
    let (seed, rest) = if size1 == 1 << shift {
        (*root1, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => {
                return Err(ProofError::WrongLength {
                    got: 0,
                    want: 1 + inner + border,
                });
            }
        }
    };
    if rest.len() != inner + border {
        let start = proof.len() - rest.len();
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: start + inner + border,
        });
    }
    let mask = (size1 - 1) >> shift;
    let hash1 = chain_border_right(
        chain_inner_right(seed, &rest[..inner], mask),
        &rest[inner..],
    );
    check_root(hash1, root1)?;
    let hash2 = chain_border_right(chain_inner(seed, &rest[..inner], mask), &rest[inner..]);
    check_root(hash2, root2)
}

/// `[start, end)` is a subtree: non-empty and aligned to the smallest power of two ≥ its width.
pub fn is_valid_subtree(start: u64, end: u64) -> bool {
    if start >= end {
        return false;
    }
    match (end - start).checked_next_power_of_two() {
        Some(width) => start.is_multiple_of(width),
        None => start == 0,
    }
}

/// Inclusion of leaf `index` in the subtree `[start, end)` with hash `subtree_root`.
pub fn verify_subtree_inclusion(
    index: u64,
    start: u64,
    end: u64,
    leaf: &Node,
    proof: &[Node],
    subtree_root: &Node,
) -> Result<(), ProofError> {
    if !is_valid_subtree(start, end) {
        return Err(ProofError::InvalidSubtree {
            start,
            end,
            size: end,
        });
    }
    if index < start || index >= end {
        return Err(ProofError::IndexOutOfRange { index, size: end });
    }
    verify_inclusion(index - start, end - start, leaf, proof, subtree_root)
}

/// Checks that the subtree `[start, end)` with hash `subtree_root` sits at those positions
/// of the tree of `size` with `root` (the Merkle Tree Certificates draft's subtree
/// consistency proof).
pub fn verify_subtree_consistency(
    start: u64,
    end: u64,
    size: u64,
    proof: &[Node],
    subtree_root: &Node,
    root: &Node,
) -> Result<(), ProofError> {
    if start == end && end <= size {
        // The empty subtree is consistent with any tree: its hash is the empty root.
        return if proof.is_empty() && *subtree_root == empty_root() {
            Ok(())
        } else {
            Err(ProofError::InvalidSubtree { start, end, size })
        };
    }
    if !is_valid_subtree(start, end) || end > size {
        return Err(ProofError::InvalidSubtree { start, end, size });
    }
    let (mut f, mut s, mut t) = (start, end - 1, size - 1);
    if s == t {
        while f != s {
            (f, s, t) = (f >> 1, s >> 1, t >> 1);
        }
    } else {
        while f != s && s & 1 == 1 {
            (f, s, t) = (f >> 1, s >> 1, t >> 1);
        }
    }
    let (mut fr, mut sr, rest) = if f == s {
        (*subtree_root, *subtree_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, *first, rest),
            None => return Err(ProofError::WrongLength { got: 0, want: 1 }),
        }
    };
    for c in rest {
        if t == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: proof.len() - 1,
            });
        }
        if s & 1 == 1 || s == t {
            if f < s {
                fr = node_hash(c, &fr);
            }
            sr = node_hash(c, &sr);
            while s & 1 == 0 {
                (f, s, t) = (f >> 1, s >> 1, t >> 1);
            }
        } else {
            sr = node_hash(&sr, c);
        }
        (f, s, t) = (f >> 1, s >> 1, t >> 1);
    }
    if t != 0 {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: proof.len() + 1,
        });
    }
    check_root(fr, subtree_root)?;
    check_root(sr, root)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::convert::Infallible;

    /// An in-memory tree for tests.
    #[derive(Default)]
    pub struct MemTree {
        pub nodes: HashMap<(u8, u64), Node>,
        pub frontier: Frontier,
    }

    impl MemTree {
        pub fn with_leaves(n: u64) -> MemTree {
            let mut t = MemTree::default();
            for i in 0..n {
                let leaf = leaf_hash(blake3::hash(&i.to_le_bytes()).as_bytes());
                t.nodes.insert((0, i), leaf);
                t.frontier.push(leaf, |l, idx, h| {
                    t.nodes.insert((l, idx), *h);
                });
            }
            t
        }
        pub fn leaf(&self, i: u64) -> Node {
            self.nodes[&(0, i)]
        }
        pub fn root_at(&self, size: u64) -> Node {
            if size == 0 {
                empty_root()
            } else {
                range_hash(self, 0, size).unwrap()
            }
        }
    }

    impl NodeSource for MemTree {
        type Error = Infallible;
        fn node(&self, level: u8, index: u64) -> Result<Node, Infallible> {
            Ok(self.nodes[&(level, index)])
        }
    }

    /// MTH straight from the RFC's recursive definition, as the reference.
    fn reference_root(leaves: &[Node]) -> Node {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = largest_power_of_two_below(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    /// A small deterministic generator so the property tests need no extra crate.
    pub struct SplitMix(pub u64);
    impl SplitMix {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            z ^ (z >> 31)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn roots_match_the_rfc_definition_for_every_size_up_to_300() {
        let t = MemTree::with_leaves(300);
        let leaves: Vec<Node> = (0..300).map(|i| t.leaf(i)).collect();
        let mut f = Frontier::default();
        for size in 0..=300u64 {
            let want = reference_root(&leaves[..size as usize]);
            assert_eq!(f.root(), want, "frontier root at size {size}");
            assert_eq!(t.root_at(size), want, "stored-node root at size {size}");
            assert_eq!(
                Frontier::load(size, &t).unwrap(),
                f,
                "reloaded frontier at {size}"
            );
            if size < 300 {
                f.push(leaves[size as usize], |_, _, _| {});
            }
        }
    }

    #[test]
    fn every_inclusion_proof_up_to_300_verifies_and_a_flipped_bit_fails() {
        let t = MemTree::with_leaves(300);
        for size in 1..=300u64 {
            let root = t.root_at(size);
            for index in 0..size {
                let proof = inclusion_proof(&t, index, size).unwrap();
                verify_inclusion(index, size, &t.leaf(index), &proof, &root).unwrap();
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0][0] ^= 1;
                    assert_ne!(first, &bad[0]);
                    assert!(verify_inclusion(index, size, &t.leaf(index), &bad, &root).is_err());
                }
                if index + 1 < size {
                    assert!(
                        verify_inclusion(index + 1, size, &t.leaf(index), &proof, &root).is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn consistency_proofs_for_random_pairs_up_to_300() {
        let t = MemTree::with_leaves(300);
        let mut rng = SplitMix(42);
        for size2 in 1..=300u64 {
            for _ in 0..20 {
                let size1 = 1 + rng.below(size2);
                let proof = consistency_proof(&t, size1, size2).unwrap();
                let (r1, r2) = (t.root_at(size1), t.root_at(size2));
                verify_consistency(size1, size2, &proof, &r1, &r2).unwrap();
                if size1 < size2 {
                    assert!(verify_consistency(size1, size2, &proof, &r2, &r2).is_err());
                    let mut bad = proof.clone();
                    let i = rng.below(bad.len() as u64) as usize;
                    bad[i][31] ^= 0x80;
                    assert!(verify_consistency(size1, size2, &bad, &r1, &r2).is_err());
                }
            }
        }
    }

    #[test]
    fn subtree_validity() {
        assert!(is_valid_subtree(0, 1));
        assert!(is_valid_subtree(8, 16));
        assert!(is_valid_subtree(8, 13));
        assert!(!is_valid_subtree(2, 5));
        assert!(!is_valid_subtree(1, 3));
        assert!(!is_valid_subtree(1, 1));
        assert!(!is_valid_subtree(1, 9_223_372_036_854_775_810));
    }
}
