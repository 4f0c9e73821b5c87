//! A seeded, deterministic random generator (ChaCha20 keystream).
//!
//! The core never seeds itself: adapters pass a seed (from the operating system's random
//! source in production, fixed in tests), so the same seed and inputs give the same outputs.
//! ChaCha20 keeps secrets drawn from it (resume secrets, session ids) unpredictable to anyone
//! who does not know the seed.

use std::time::Duration;

use crate::time::millis;

/// A 256-bit seed.
pub type Seed = [u8; 32];

/// Deterministic random numbers from a seed.
#[derive(Clone)]
pub struct Rng {
    key: [u32; 8],
    counter: u64,
    block: [u8; 64],
    used: usize,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rng(<seeded>)")
    }
}

const CONSTANTS: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

fn quarter(state: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    state[a] = state[a].wrapping_add(state[b]);
    state[d] = (state[d] ^ state[a]).rotate_left(16);
    state[c] = state[c].wrapping_add(state[d]);
    state[b] = (state[b] ^ state[c]).rotate_left(12);
    state[a] = state[a].wrapping_add(state[b]);
    state[d] = (state[d] ^ state[a]).rotate_left(8);
    state[c] = state[c].wrapping_add(state[d]);
    state[b] = (state[b] ^ state[c]).rotate_left(7);
}

/// The ChaCha20 block function (RFC 8439 §2.3) with a 64-bit counter and 64-bit nonce.
fn chacha20_block(key: &[u32; 8], counter: u64, nonce: u64) -> [u8; 64] {
    let mut input = [0u32; 16];
    input[..4].copy_from_slice(&CONSTANTS);
    input[4..12].copy_from_slice(key);
    input[12] = counter as u32;
    input[13] = (counter >> 32) as u32;
    input[14] = nonce as u32;
    input[15] = (nonce >> 32) as u32;
    let mut state = input;
    for _ in 0..10 {
        quarter(&mut state, 0, 4, 8, 12);
        quarter(&mut state, 1, 5, 9, 13);
        quarter(&mut state, 2, 6, 10, 14);
        quarter(&mut state, 3, 7, 11, 15);
        quarter(&mut state, 0, 5, 10, 15);
        quarter(&mut state, 1, 6, 11, 12);
        quarter(&mut state, 2, 7, 8, 13);
        quarter(&mut state, 3, 4, 9, 14);
    }
    let mut out = [0u8; 64];
    for (index, word) in state.iter().enumerate() {
        let value = word.wrapping_add(input[index]);
        out[index * 4..index * 4 + 4].copy_from_slice(&value.to_le_bytes());
    }
    out
}

impl Rng {
    /// A generator from a 256-bit seed.
    pub fn from_seed(seed: Seed) -> Rng {
        let mut key = [0u32; 8];
        for (word, bytes) in key.iter_mut().zip(seed.chunks_exact(4)) {
            *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        }
        Rng {
            key,
            counter: 0,
            block: [0; 64],
            used: 64,
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

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        for byte in out {
            if self.used == self.block.len() {
                self.block = chacha20_block(&self.key, self.counter, 0);
                self.counter = self.counter.wrapping_add(1);
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
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
    fn block_function_matches_rfc_8439_test_vector() {
        // RFC 8439 §2.3.2: key 00..1f, block counter 1, nonce 000000090000004a00000000.
        // Our layout puts a 64-bit counter in words 12-13 and a 64-bit nonce in 14-15, so the
        // RFC's (counter 1, nonce word 0x09000000) is counter 0x0900000000000001 here.
        let mut key = [0u32; 8];
        for (index, word) in key.iter_mut().enumerate() {
            let base = (index * 4) as u8;
            *word = u32::from_le_bytes([base, base + 1, base + 2, base + 3]);
        }
        let block = chacha20_block(&key, 0x0900_0000_0000_0001, 0x0000_0000_4a00_0000);
        let expected = "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e\
                        d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e";
        assert_eq!(crate::wire::hex::encode(&block), expected);
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
