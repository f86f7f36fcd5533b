//! Go formatting and escaping primitives the request-log templates rely on:
//! `fmt`'s `%v` for `float64`, the `js`, `html` and `urlquery` template
//! escapers, and `net/textproto`'s canonical header keys.

use std::fmt::Write as _;

/// Appends `f` formatted as Go's `fmt` `%v` does for a `float64`.
///
/// That is `strconv.FormatFloat(f, 'g', -1, 64)`: the shortest digits that
/// round-trip, in `%e` form when the decimal exponent is below -4 or at
/// least 6 (the precision `'g'` uses when asked for the shortest form), and
/// `%f` form otherwise. Infinities carry an explicit sign (`+Inf`).
pub(super) fn push_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    // Rust's `{:e}` without a precision already yields the shortest
    // round-trip digits (`1.2345e-7`, `1e21`); only the layout differs.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i64 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "e{sign}{:02}", exp.unsigned_abs());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 1..exp.unsigned_abs() {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = usize::try_from(exp).unwrap_or(0) + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            let (int, frac) = digits.split_at(int_len);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    }
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `s` escaped as Go's `text/template` `JSEscapeString` does.
///
/// `\`, `'` and `"` get a backslash; `<`, `>`, `&` and `=` become `\u003C`,
/// `\u003E`, `\u0026` and `\u003D`; ASCII control characters (below 0x20,
/// newline included) become `\u00XX`; non-ASCII characters pass through when
/// printable and become `\uXXXX` otherwise. DEL (0x7F) passes through, as in
/// Go.
pub(super) fn push_js_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            '"' => out.push_str(r#"\""#),
            '<' => out.push_str(r"\u003C"),
            '>' => out.push_str(r"\u003E"),
            '&' => out.push_str(r"\u0026"),
            '=' => out.push_str(r"\u003D"),
            c if c < ' ' => {
                let b = u32::from(c);
                out.push_str(r"\u00");
                for nibble in [b >> 4, b & 0xf] {
                    let idx = usize::try_from(nibble).unwrap_or(0);
                    out.push(char::from(UPPER_HEX[idx]));
                }
            }
            c if c.is_ascii() || is_go_printable(c) => out.push(c),
            c => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
        }
    }
}

/// Approximates Go's `unicode.IsPrint` for non-ASCII characters.
///
/// Go treats letters, marks, numbers, punctuation and symbols as printable,
/// and of the spaces only U+0020. Without Unicode tables this rejects the
/// categories that matter in practice (C1 controls, non-ASCII spaces and
/// separators, the common format characters and private use); unassigned
/// code points are treated as printable.
fn is_go_printable(c: char) -> bool {
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    !matches!(
        u32::from(c),
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xE000..=0xF8FF
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            | 0xF0000..=0x10FFFF
    )
}

/// Appends `s` escaped as Go's `text/template` `HTMLEscapeString` does.
pub(super) fn push_html_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// Appends `s` escaped as Go's `url.QueryEscape` does (the `urlquery`
/// template function): unreserved bytes stay, space becomes `+`, everything
/// else is `%XX` with uppercase hex.
pub(super) fn push_query_escaped(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            b => {
                out.push('%');
                out.push(char::from(UPPER_HEX[usize::from(b >> 4)]));
                out.push(char::from(UPPER_HEX[usize::from(b & 0xf)]));
            }
        }
    }
}

/// Go's `textproto.CanonicalMIMEHeaderKey` for a valid header name:
/// `x-b3-traceid` becomes `X-B3-Traceid`.
pub(super) fn canonical_header_key(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let mapped = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            mapped
        })
        .collect()
}

/// Decodes `%XX` escapes, as Go's `url.URL.Path` holds the unescaped path.
/// Malformed escapes are kept verbatim and invalid UTF-8 is replaced.
pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| {
            char::from(b)
                .to_digit(16)
                .and_then(|d| u8::try_from(d).ok())
        };
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(hex(h).unwrap_or(0) << 4 | hex(l).unwrap_or(0));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
