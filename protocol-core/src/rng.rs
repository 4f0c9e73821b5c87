//! A seeded, deterministic random generator (ChaCha20 keystream).
//!
//! The core never seeds itself: adapters pass a seed (from the operating system's random
//! source in production, fixed in tests), so the same seed and inputs give the same outputs.
//! ChaCha20 keeps secrets drawn from it (resume secrets, session ids) unpredictable to anyone
//! who does not know the seed.

use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::time::millis;

/// A 256-bit seed.
pub type Seed = [u8; 32];

/// Deterministic random numbers from a seed: the keystream of ChaCha20 (RFC 8439 block
/// function, 64-bit counter from 0, stream 0), read as bytes in order.
#[derive(Clone)]
pub struct Rng {
    inner: ChaCha20Rng,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rng(<seeded>)")
    }
}

impl Rng {
    /// A generator from a 256-bit seed (the ChaCha20 key).
    pub fn from_seed(seed: Seed) -> Rng {
        Rng {
            inner: ChaCha20Rng::from_seed(seed),
        }
    }

    /// A generator from a small seed (tests, simulations). Not for production secrets.
    pub fn from_u64(seed: u64) -> Rng {
        let mut full = [0u8; 32];
        full[..8].copy_from_slice(&seed.to_le_bytes());
        Rng::from_seed(full)
    }

    /// A new generator whose stream is independent of this one's later output.
    pub fn fork(&mut self) -> Rng {
        let mut seed = [0u8; 32];
        self.fill(&mut seed);
        Rng::from_seed(seed)
    }

    /// Fills `out` with the next bytes of the keystream. (The keystream is consumed in
    /// whole 32-bit words: a length that is not a multiple of 4 skips the rest of its last
    /// word. The core only draws multiples of 4.)
    pub fn fill(&mut self, out: &mut [u8]) {
        self.inner.fill_bytes(out);
    }

    /// A random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// A uniform integer in `low..=high` (`low` if the range is empty).
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        let span = high - low;
        if span == u64::MAX {
            return self.next_u64();
        }
        // Rejection sampling keeps the draw exactly uniform.
        let range = span + 1;
        let zone = u64::MAX - (u64::MAX % range) - 1;
        loop {
            let value = self.next_u64();
            if value <= zone {
                return low + value % range;
            }
        }
    }

    /// A uniform duration in `low..=high`, in whole milliseconds.
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        Duration::from_millis(self.between(millis(low), millis(high)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystream_matches_rfc_8439_test_vector() {
        // RFC 8439 §2.3.2: key 00..1f, block counter 1, nonce 000000090000004a00000000.
        // rand_chacha puts a 64-bit counter in words 12-13 and the stream in 14-15, so the
        // RFC's (counter 1, nonce word 0x09000000) is block 0x0900000000000001 of stream
        // 0x4a000000 there. The generator itself uses block 0 on of stream 0.
        let mut key = [0u8; 32];
        for (index, byte) in key.iter_mut().enumerate() {
            *byte = index as u8;
        }
        let mut chacha = ChaCha20Rng::from_seed(key);
        chacha.set_stream(0x4a00_0000);
        chacha.set_word_pos(0x0900_0000_0000_0001u128 * 16);
        let mut block = [0u8; 64];
        chacha.fill_bytes(&mut block);
        let expected = "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e\
                        d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e";
        assert_eq!(crate::wire::hex::encode(&block), expected);
    }

    const PINNED_SEED_7: &str = "f19ee3b965429844e496af300ed6cb0ddf11e75412e4252c";

    /// The stream the committed vectors were recorded with (the keystream of seed 7 from
    /// block 0), so swapping the ChaCha20 implementation cannot change them unnoticed.
    #[test]
    fn the_keystream_of_a_seed_is_pinned() {
        let mut rng = Rng::from_u64(7);
        let mut bytes = [0u8; 24];
        rng.fill(&mut bytes[..8]);
        rng.fill(&mut bytes[8..]);
        assert_eq!(crate::wire::hex::encode(&bytes), PINNED_SEED_7);
    }

    #[test]
    fn same_seed_same_stream_and_different_seeds_differ() {
        let mut a = Rng::from_u64(7);
        let mut b = Rng::from_u64(7);
        let mut c = Rng::from_u64(8);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..100).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn between_stays_in_bounds_and_reaches_both_ends() {
        let mut rng = Rng::from_u64(1);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            let value = rng.between(10, 13);
            assert!((10..=13).contains(&value));
            seen[(value - 10) as usize] = true;
        }
        assert_eq!(seen, [true; 4]);
        assert_eq!(rng.between(5, 5), 5);
        assert_eq!(rng.between(6, 5), 6);
    }
}
