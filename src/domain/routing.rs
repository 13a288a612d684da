//! The A/B draw: which variant answers a request, decided by the request's id alone, so an
//! auditor recomputes it from the run's record (`docs/lifecycle.md` states the rule).
//!
//! `draw = u64_le(blake3(request id's 16 bytes)[0..8]) mod W`, with W the sum of the
//! answering variants' weights; the variants, in name order, own consecutive intervals of
//! `weight` draws each. Request ids are UUIDv7s with 74 random bits, so draws are uniform for
//! all purposes here (the modulo's bias is below W / 2^64).

use uuid::Uuid;

/// A request's draw in `0..total` (`total` ≥ 1).
pub fn draw(request_id: Uuid, total: u64) -> u64 {
    let hash = blake3::hash(request_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first) % total.max(1)
}

/// The index of the weight whose interval holds `draw`, weights in their order.
pub fn chosen(weights: impl IntoIterator<Item = u32>, draw: u64) -> Option<usize> {
    let mut end = 0u64;
    for (i, w) in weights.into_iter().enumerate() {
        end += u64::from(w);
        if draw < end {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_draw_is_the_hash_of_the_request_id() {
        let id = Uuid::parse_str("01a20b37-0cc0-7668-8a8c-74fcf0d36790").unwrap();
        let hash = blake3::hash(id.as_bytes());
        let expected = u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap()) % 100;
        assert_eq!(draw(id, 100), expected);
        assert_eq!(draw(id, 1), 0);
        assert_eq!(draw(id, 0), 0);
    }

    #[test]
    fn weights_own_consecutive_intervals() {
        let w = [3, 1, 6];
        let picks: Vec<Option<usize>> = (0..11).map(|d| chosen(w, d)).collect();
        let mut want = vec![Some(0); 3];
        want.push(Some(1));
        want.extend([Some(2); 6]);
        want.push(None);
        assert_eq!(picks, want);
    }

    #[test]
    fn draws_follow_the_weights() {
        // 20,000 ids; a 70/30 split lands within four standard deviations of its shares.
        let mut b = 0u64;
        for i in 0..20_000u128 {
            let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | i);
            if chosen([70, 30], draw(id, 100)) == Some(1) {
                b += 1;
            }
        }
        let (n, p) = (20_000f64, 0.3);
        let sd = (n * p * (1.0 - p)).sqrt();
        assert!((b as f64 - n * p).abs() < 4.0 * sd, "{b} of 20000");
    }
}
