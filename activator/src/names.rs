//! Names Knative derives from a revision's: its private Service.
//!
//! Beside the request path. The private Service (and its Endpoints) is
//! `<rev>-private`; a revision name too long for that to fit Kubernetes' 63
//! characters is cut to 23 characters and followed by the hex MD5 of the
//! whole name (Knative's `kmeta.ChildName`). The activator needs the name for
//! the ClusterIP lookup and for the mesh `Host` header.

const LONGEST: usize = 63;
const MD5_HEX_LEN: usize = 32;
const PRIVATE_SUFFIX: &str = "-private";

/// The private Service of revision `rev`.
pub fn private_service(rev: &str) -> String {
    let head = LONGEST - MD5_HEX_LEN - PRIVATE_SUFFIX.len();
    if rev.len() <= LONGEST - PRIVATE_SUFFIX.len() {
        return format!("{rev}{PRIVATE_SUFFIX}");
    }
    // Revision names are DNS labels (ASCII), so byte slicing is on a char
    // boundary; fall back to the whole name otherwise.
    let prefix = rev.get(..head).unwrap_or(rev);
    let mut out = String::with_capacity(LONGEST);
    out.push_str(prefix);
    for byte in md5(rev.as_bytes()) {
        out.push_str(&format!("{byte:02x}"));
    }
    out.push_str(PRIVATE_SUFFIX);
    out
}

/// RFC 1321 MD5; a name hash only, not for security.
fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: [u32; 64] = std::array::from_fn(|i| {
        // floor(|sin(i + 1)| * 2^32), as the RFC defines the table.
        let v = ((i + 1) as f64).sin().abs() * 4_294_967_296.0;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "the value is in [0, 2^32) by construction"
        )]
        let v = v as u32;
        v
    });
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut message = input.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    let bits = (input.len() as u64).wrapping_mul(8);
    message.extend_from_slice(&bits.to_le_bytes());
    for chunk in message.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                chunk[4 * i],
                chunk[4 * i + 1],
                chunk[4 * i + 2],
                chunk[4 * i + 3],
            ])
        });
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a
                .wrapping_add(f)
                .wrapping_add(k[i])
                .wrapping_add(m[g])
                .rotate_left(S[i]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(rotated);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut out = [0u8; 16];
    for (i, word) in state.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: [u8; 16]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn md5_matches_rfc_1321() {
        assert_eq!(hex(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(md5(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            )),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    #[test]
    fn private_service_names_match_knative() {
        assert_eq!(private_service("foo"), "foo-private");
        let long_enough = "f".repeat(55);
        assert_eq!(
            private_service(&long_enough),
            format!("{long_enough}-private")
        );
        assert_eq!(
            private_service(&"f".repeat(63)),
            "fffffffffffffffffffffff105d7597f637e83cc711605ac3ea4957-private"
        );
    }
}
