//! Only canonical request paths cross the proxy.
//!
//! A path such as `/openai/deployments/gpt-4o/../../other/chat/completions` means one thing to
//! the proxy (deployment `gpt-4o`, which the client's key may use) and another to any server on
//! the way that normalises it (a deployment the key was never allowed, or the resource's files
//! and batches), called with the backend's credentials. Rather than normalising and hoping every
//! hop agrees, the proxy refuses every path that some hop could read differently: dot-segments,
//! their percent-encoded forms, encoded slashes, backslashes, path parameters (`..;` is `..` to
//! some servers), double encoding, control and non-ASCII bytes, and empty segments.
//!
//! The check runs on the raw request target, one pass over its bytes, without allocating.

use std::fmt;

/// Why a path is not canonical; the text goes into the client's 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonCanonical {
    NotAbsolute,
    EmptySegment,
    DotSegment,
    EncodedSlash,
    Backslash,
    PathParameter,
    DoubleEncoding,
    MalformedEscape,
    /// Encoded `?` or `#`: a hop that decodes once would cut the path there.
    EncodedDelimiter,
    /// Spaces, control characters (NUL included) and bytes outside ASCII, raw or encoded.
    ForbiddenByte,
}

impl fmt::Display for NonCanonical {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "it does not start with '/'",
            Self::EmptySegment => "it has an empty segment ('//' or a trailing '/')",
            Self::DotSegment => "it has a '.' or '..' segment (raw or percent-encoded)",
            Self::EncodedSlash => "it has an encoded slash (%2F)",
            Self::Backslash => "it has a backslash (raw or %5C)",
            Self::PathParameter => "it has a ';' (path parameters are not accepted)",
            Self::DoubleEncoding => "it has an encoded '%' (double encoding)",
            Self::MalformedEscape => "it has a '%' not followed by two hex digits",
            Self::EncodedDelimiter => "it has an encoded '?' or '#'",
            Self::ForbiddenByte => {
                "it has a space, a control character or a byte outside ASCII (raw or encoded)"
            }
        })
    }
}

/// Checks that `path` (the path of a request target, without its query) is canonical.
pub fn check(path: &str) -> Result<(), NonCanonical> {
    let bytes = path.as_bytes();
    match bytes {
        [b'/'] => return Ok(()),
        [b'/', rest @ ..] if is_plainly_canonical(rest) => return Ok(()),
        [b'/', ..] => {}
        _ => return Err(NonCanonical::NotAbsolute),
    }
    walk(bytes)
}

/// Whether the path after its leading `/` is canonical without a doubt: no escape, nothing
/// refused, and no segment that starts with a dot or is empty. The paths clients send are, and
/// one branch-free pass over byte pairs answers them in two thirds of the walk's instructions
/// (it runs twice per call: on the client's path and on the backend's). Anything else, such as
/// `/v1/.well-known`, is left to [`walk`], which also names what is wrong.
fn is_plainly_canonical(rest: &[u8]) -> bool {
    let (Some(&first), Some(&last)) = (rest.first(), rest.last()) else {
        return false;
    };
    let doubtful = rest
        .iter()
        .zip(&rest[1..])
        .fold(false, |doubtful, (&byte, &next)| {
            doubtful | not_plain(next) | ((byte == b'/') & ((next == b'/') | (next == b'.')))
        });
    !doubtful && !not_plain(first) && first != b'.' && first != b'/' && last != b'/'
}

/// Outside `!`..`~`, or a byte the walk must look at: an escape, a backslash, a `;`.
fn not_plain(byte: u8) -> bool {
    (byte.wrapping_sub(b'!') > b'~' - b'!') | (byte == b'%') | (byte == b'\\') | (byte == b';')
}

/// The check byte by byte, decoding escapes: the first thing that is wrong, or `Ok`.
fn walk(bytes: &[u8]) -> Result<(), NonCanonical> {
    let mut segment = Segment::default();
    let mut i = 1;
    while i < bytes.len() {
        // Most bytes are plain: take a run of them in a tight loop (this check runs twice per
        // call, on the client's path and on the backend's).
        let run = bytes[i..]
            .iter()
            .take_while(|&&b| PLAIN[usize::from(b)])
            .count();
        if run > 0 {
            segment.push_plain(run);
            i += run;
            continue;
        }
        let decoded = match bytes[i] {
            b'/' => {
                segment.end()?;
                segment = Segment::default();
                i += 1;
                continue;
            }
            b'%' => {
                let escape = bytes
                    .get(i + 1..i + 3)
                    .ok_or(NonCanonical::MalformedEscape)?;
                let byte = hex(escape[0])
                    .zip(hex(escape[1]))
                    .map(|(high, low)| high << 4 | low)
                    .ok_or(NonCanonical::MalformedEscape)?;
                i += 3;
                match byte {
                    b'/' => return Err(NonCanonical::EncodedSlash),
                    b'%' => return Err(NonCanonical::DoubleEncoding),
                    b'?' | b'#' => return Err(NonCanonical::EncodedDelimiter),
                    _ => byte,
                }
            }
            byte => {
                i += 1;
                byte
            }
        };
        match decoded {
            b'\\' => return Err(NonCanonical::Backslash),
            b';' => return Err(NonCanonical::PathParameter),
            0x21..=0x7e => segment.push(decoded),
            _ => return Err(NonCanonical::ForbiddenByte),
        }
    }
    segment.end()
}

/// The segment being read: its length and whether it is all dots so far.
#[derive(Default)]
struct Segment {
    len: usize,
    not_only_dots: bool,
}

/// Bytes that stand for themselves and are neither a dot nor special to the check.
static PLAIN: [bool; 256] = {
    let mut plain = [false; 256];
    let mut byte = 0x21;
    while byte <= 0x7e {
        plain[byte] = !matches!(byte as u8, b'/' | b'%' | b'\\' | b';' | b'.');
        byte += 1;
    }
    plain
};

impl Segment {
    /// `count` plain bytes: none of them a dot.
    fn push_plain(&mut self, count: usize) {
        self.len += count;
        self.not_only_dots = true;
    }

    fn push(&mut self, decoded: u8) {
        self.len += 1;
        self.not_only_dots |= decoded != b'.';
    }

    /// A segment of dots alone is `.` or `..` to RFC 3986, and `...` is `..` to servers that
    /// trim trailing dots.
    fn end(&self) -> Result<(), NonCanonical> {
        match (self.len, self.not_only_dots) {
            (0, _) => Err(NonCanonical::EmptySegment),
            (_, false) => Err(NonCanonical::DotSegment),
            _ => Ok(()),
        }
    }
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_paths_clients_send() {
        for path in [
            "/openai/deployments/gpt-4o/chat/completions",
            "/openai/deployments/gpt-4o.mini_2/embeddings",
            "/v1/chat/completions",
            "/openai/v1/responses",
            "/v1/models/ft:gpt-4o:org:custom:abc",
            "/v1/models/ft%3Agpt-4o%3Aorg",
            "/v1/files/file-abc123/content",
            "/v1/.well-known",
            "/v1/a..b",
            // Canonical, though nothing is routed there.
            "/",
        ] {
            assert_eq!(check(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn refuses_every_way_of_spelling_a_parent_or_a_separator() {
        for (path, why) in [
            ("v1/chat", NonCanonical::NotAbsolute),
            ("/openai/deployments/gpt-4o/../x", NonCanonical::DotSegment),
            ("/openai/deployments/gpt-4o/./x", NonCanonical::DotSegment),
            ("/v1/chat/..", NonCanonical::DotSegment),
            ("/v1/%2e%2e/x", NonCanonical::DotSegment),
            ("/v1/%2E%2e/x", NonCanonical::DotSegment),
            ("/v1/.%2e/x", NonCanonical::DotSegment),
            ("/v1/%2e./x", NonCanonical::DotSegment),
            ("/v1/%2e/x", NonCanonical::DotSegment),
            ("/v1/.../x", NonCanonical::DotSegment),
            ("/v1/..%2fx", NonCanonical::EncodedSlash),
            ("/v1/a%2Fb", NonCanonical::EncodedSlash),
            ("/v1/..\\x", NonCanonical::Backslash),
            ("/v1/a%5cb", NonCanonical::Backslash),
            ("/v1/..;/x", NonCanonical::PathParameter),
            ("/v1/a%3bb", NonCanonical::PathParameter),
            ("/v1/%252e%252e/x", NonCanonical::DoubleEncoding),
            ("/v1/%2", NonCanonical::MalformedEscape),
            ("/v1/%zz", NonCanonical::MalformedEscape),
            ("/v1/%u002e%u002e", NonCanonical::MalformedEscape),
            ("/v1/a%3fb", NonCanonical::EncodedDelimiter),
            ("/v1/a%23b", NonCanonical::EncodedDelimiter),
            ("/v1/a%00b", NonCanonical::ForbiddenByte),
            ("/v1/a%0ab", NonCanonical::ForbiddenByte),
            ("/v1/..%20", NonCanonical::ForbiddenByte),
            ("/v1/%c0%ae%c0%ae/x", NonCanonical::ForbiddenByte),
            ("/v1/caf\u{e9}", NonCanonical::ForbiddenByte),
            ("/v1//chat", NonCanonical::EmptySegment),
            ("/v1/chat/", NonCanonical::EmptySegment),
            ("//v1/chat", NonCanonical::EmptySegment),
        ] {
            assert_eq!(check(path), Err(why), "{path}");
        }
    }

    proptest::proptest! {
        /// The shortcut answers as the walk would, on paths made of the bytes that matter.
        #[test]
        fn the_shortcut_agrees_with_the_walk(
            path in "/?([a-z./;%\\\\ ]|%2[eEfF]|%5[cC]|%25|%3[bBfF]|%2|é){0,12}"
        ) {
            let walked = match path.as_bytes() {
                [b'/'] => Ok(()),
                [b'/', ..] => walk(path.as_bytes()),
                _ => Err(NonCanonical::NotAbsolute),
            };
            proptest::prop_assert_eq!(check(&path), walked);
        }
    }
}
