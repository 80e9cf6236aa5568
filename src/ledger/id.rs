//! Record ids: unique, and sortable by creation time as plain strings (ULID layout).
//!
//! An id is 128 bits written as 26 Crockford base32 characters: 48 bits of Unix
//! milliseconds, then 80 bits of randomness. Within one process the ids are strictly
//! increasing: an id made in the same millisecond as the previous one (or while the wall
//! clock stepped back) reuses the previous time and adds one to its random part, so ids
//! never collide in a process and sort in the order they were made. Across processes the
//! 80 random bits keep them apart.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Crockford's base32 alphabet (no I, L, O, U): upper case, so ids sort as strings.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Length of an id in characters.
pub const ID_LEN: usize = 26;

const RANDOM_BITS: u32 = 80;
const RANDOM_MAX: u128 = (1 << RANDOM_BITS) - 1;
const TIME_MAX: u64 = (1 << 48) - 1;

/// The last id's parts, so the next one can be made strictly larger.
struct Last {
    ms: u64,
    random: u128,
}

static LAST: Mutex<Last> = Mutex::new(Last { ms: 0, random: 0 });

/// A new record id, larger than every id this process made before.
pub fn new_id() -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(TIME_MAX))
        .unwrap_or(0)
        .min(TIME_MAX);
    let (ms, random) = next_parts(now_ms);
    encode((u128::from(ms) << RANDOM_BITS) | random)
}

/// Whether `s` has the shape of an id (26 characters of the alphabet, first one `0`..`7`).
pub fn is_valid_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == ID_LEN && b[0] <= b'7' && b.iter().all(|c| ALPHABET.contains(c))
}

/// The 128-bit value of an id, or `None` when `s` is not one.
pub fn decode(s: &str) -> Option<u128> {
    if !is_valid_id(s) {
        return None;
    }
    s.bytes().try_fold(0u128, |acc, c| {
        let digit = ALPHABET.iter().position(|&a| a == c)?;
        Some((acc << 5) | digit as u128)
    })
}

fn next_parts(now_ms: u64) -> (u64, u128) {
    // A poisoned lock only means another thread panicked between two plain assignments;
    // the state is still usable.
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if now_ms > last.ms {
        last.ms = now_ms;
        last.random = random80();
    } else if last.random < RANDOM_MAX {
        last.random += 1;
    } else {
        // 2^80 ids in one millisecond cannot happen, but stay correct: borrow the next one.
        last.ms = (last.ms + 1).min(TIME_MAX);
        last.random = random80();
    }
    (last.ms, last.random)
}

fn random80() -> u128 {
    let mut buf = [0u8; 16];
    if getrandom::fill(&mut buf[6..]).is_err() {
        fallback_random(&mut buf[6..]);
    }
    u128::from_be_bytes(buf) & RANDOM_MAX
}

/// Without an OS random source, still keep processes apart: hash what differs between them.
fn fallback_random(out: &mut [u8]) {
    use sha2::{Digest, Sha256};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    let digest = h.finalize();
    for (o, d) in out.iter_mut().zip(digest.iter()) {
        *o = *d;
    }
}

fn encode(mut value: u128) -> String {
    let mut chars = [b'0'; ID_LEN];
    for c in chars.iter_mut().rev() {
        *c = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    chars.iter().map(|&c| char::from(c)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn encodes_time_then_randomness() {
        assert_eq!(encode(0), "00000000000000000000000000");
        assert_eq!(encode(u128::MAX), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        // 1 ms after the epoch, random part 0: the time sits in the first 10 characters.
        assert_eq!(encode(1u128 << RANDOM_BITS), "00000000010000000000000000");
        assert_eq!(encode(31), "0000000000000000000000000Z");
        for v in [
            0,
            31,
            1u128 << RANDOM_BITS,
            u128::MAX,
            0x0123_4567_89ab_cdef,
        ] {
            assert_eq!(decode(&encode(v)), Some(v));
        }
        assert_eq!(decode("not an id"), None);
    }

    #[test]
    fn same_millisecond_ids_increase_by_one() {
        let (ms1, r1) = next_parts(5);
        let (ms2, r2) = next_parts(5);
        // Other tests may share the static state; what matters is the strict increase.
        assert!((ms2, r2) > (ms1, r1));
        let (ms3, r3) = next_parts(1); // the clock stepped back
        assert!((ms3, r3) > (ms2, r2));
    }

    #[test]
    fn ids_from_many_threads_are_unique_valid_and_increasing_per_thread() {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    let ids: Vec<String> = (0..2000).map(|_| new_id()).collect();
                    assert!(ids.windows(2).all(|w| w[0] < w[1]));
                    ids
                })
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(is_valid_id(&id), "{id}");
                assert!(all.insert(id));
            }
        }
        assert_eq!(all.len(), 16_000);
    }

    #[test]
    fn validates_shape() {
        assert!(is_valid_id("01JQ7ZK3M4N5P6Q7R8S9TVWXYZ"));
        assert!(!is_valid_id("81JQ7ZK3M4N5P6Q7R8S9TVWXYZ")); // over 128 bits
        assert!(!is_valid_id("01JQ7ZK3M4N5P6Q7R8S9TVWXYI")); // I is not in the alphabet
        assert!(!is_valid_id("01jq7zk3m4n5p6q7r8s9tvwxyz")); // lower case
        assert!(!is_valid_id("01JQ7ZK3M4N5P6Q7R8S9TVWXY"));
    }
}
