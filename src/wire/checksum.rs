//! The Internet checksum (RFC 1071) as a running ones'-complement sum, so that the sum of a
//! pre-serialised payload can be computed once and combined with a header later (RFC 1624).
//!
//! Invariant: a [`PartialSum`] always describes a byte string that starts at an even offset of
//! the final checksummed data. Combining with [`PartialSum::combine`] requires the left part to
//! have even length (as every TCP/IP header has); an odd-length left part is handled by
//! byte-swapping the right sum, as RFC 1071 section 2(B) allows.

/// A ones'-complement sum of a byte string, not yet folded or inverted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartialSum {
    sum: u64,
    odd: bool,
}

impl PartialSum {
    /// The sum of `data`, taken as big-endian 16-bit words (a trailing odd byte is padded).
    pub fn of(data: &[u8]) -> Self {
        let mut sum: u64 = 0;
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            // Adding the two 32-bit halves keeps carries inside 64 bits for any input size
            // below 2^32 words.
            sum += (w >> 32) + (w & 0xffff_ffff);
        }
        let rest = chunks.remainder();
        let mut pairs = rest.chunks_exact(2);
        for p in &mut pairs {
            sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
        }
        if let [last] = pairs.remainder() {
            sum += u64::from(*last) << 8;
        }
        PartialSum {
            sum,
            odd: data.len() % 2 == 1,
        }
    }

    /// Adds a 16-bit word (for pseudo-header fields).
    pub fn add_u16(self, word: u16) -> Self {
        PartialSum {
            sum: self.sum + u64::from(word),
            odd: self.odd,
        }
    }

    /// Sum of `self` followed by `right`.
    pub fn combine(self, right: PartialSum) -> Self {
        let r = if self.odd {
            // RFC 1071 2(B): a sum over bytes at odd offsets is the byte-swapped sum.
            u64::from(fold(right.sum).swap_bytes())
        } else {
            right.sum
        };
        PartialSum {
            sum: self.sum + r,
            odd: self.odd ^ right.odd,
        }
    }

    /// The 16-bit folded sum (not inverted).
    pub fn folded(self) -> u16 {
        fold(self.sum)
    }

    /// The checksum field value: the inverted folded sum.
    pub fn checksum(self) -> u16 {
        !fold(self.sum)
    }
}

fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u32::from(*b));
            sum += hi | lo;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn matches_rfc1071_example() {
        // RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(PartialSum::of(&data).folded(), 0xddf2);
    }

    #[test]
    fn combine_equals_whole_for_every_split() {
        let data: Vec<u8> = (0..97u32).map(|i| (i * 37 % 251) as u8).collect();
        let whole = PartialSum::of(&data).checksum();
        assert_eq!(whole, naive(&data));
        for split in 0..=data.len() {
            let (a, b) = data.split_at(split);
            let joined = PartialSum::of(a).combine(PartialSum::of(b));
            assert_eq!(joined.checksum(), whole, "split at {split}");
        }
    }
}
