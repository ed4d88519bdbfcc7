//! The members of a JSON object, found without parsing what their values hold: a string is
//! skipped by looking for its closing quote, an array or object by counting brackets outside
//! strings. For reading a few top-level fields of a request body whose bulk (the prompt) the
//! proxy has no use for: serde walks every byte of it, through the escape and UTF-8 checks of
//! every string, at several times the cost (profiled).
//!
//! Only the object's own structure is checked, not its values' insides: a caller that needs
//! the same answer as a full parser must check the values it reads, and hand anything this
//! gives up on to one.

use memchr::memchr2;

/// Calls `each` with every member's key (as written between its quotes) and value (as
/// written), in order, of the object `json` starts with; its length, whatever follows it.
/// `None` when `json` does not start with a complete object, when a key holds an escape (its
/// text is not the name it spells), or when `each` gives up.
pub fn each_member<'a>(
    json: &'a [u8],
    mut each: impl FnMut(&'a [u8], &'a [u8]) -> Option<()>,
) -> Option<usize> {
    let mut at = skip_space(json, 0);
    expect(json, at, b'{')?;
    at = skip_space(json, at + 1);
    if json.get(at) == Some(&b'}') {
        return Some(at + 1);
    }
    loop {
        expect(json, at, b'"')?;
        let key_end = at + 1 + quote_or_backslash(json.get(at + 1..)?)?;
        expect(json, key_end, b'"')?;
        let key = &json[at + 1..key_end];
        at = skip_space(json, key_end + 1);
        expect(json, at, b':')?;
        let start = skip_space(json, at + 1);
        let end = value_end(json, start)?;
        each(key, &json[start..end])?;
        at = skip_space(json, end);
        match json.get(at)? {
            b',' => at = skip_space(json, at + 1),
            b'}' => return Some(at + 1),
            _ => return None,
        }
    }
}

/// [`each_member`] for the members named in `fields` (at most 64), which `each` gets with
/// the name as listed. Gives up on a field met twice: serde refuses an object that repeats
/// one, and a reader built on this is to agree with serde.
pub fn each_field<'a>(
    json: &'a [u8],
    fields: &[&'static [u8]],
    mut each: impl FnMut(&'static [u8], &'a [u8]) -> Option<()>,
) -> Option<usize> {
    let mut seen = 0u64;
    each_member(json, |key, value| {
        let Some(field) = fields.iter().position(|name| *name == key) else {
            return Some(());
        };
        let bit = 1 << field;
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        each(fields[field], value)
    })
}

/// Whether only whitespace follows `at`, as after a whole JSON document.
pub fn only_space_after(json: &[u8], at: usize) -> Option<()> {
    json[at..].iter().all(|&byte| is_space(byte)).then_some(())
}

/// A count in plain digits, as serde reads a `u64`; `None` for anything serde might read
/// differently or refuse (a sign, a fraction, an exponent, a leading zero, too many digits).
pub fn count(value: &[u8]) -> Option<u64> {
    let plain = !value.is_empty()
        && value.iter().all(u8::is_ascii_digit)
        && (value == b"0" || value[0] != b'0');
    if !plain {
        return None;
    }
    value.iter().try_fold(0u64, |count, digit| {
        count.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// `null` as `None` and anything else as `read` reads it, as serde reads an `Option`; `None`
/// (give up) when `read` does.
pub fn nullable<T>(value: &[u8], read: impl FnOnce(&[u8]) -> Option<T>) -> Option<Option<T>> {
    match value {
        b"null" => Some(None),
        _ => read(value).map(Some),
    }
}

pub fn flag(value: &[u8]) -> Option<bool> {
    match value {
        b"true" => Some(true),
        b"false" => Some(false),
        _ => None,
    }
}

fn expect(json: &[u8], at: usize, byte: u8) -> Option<()> {
    (json.get(at) == Some(&byte)).then_some(())
}

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_space(json: &[u8], mut at: usize) -> usize {
    while json.get(at).is_some_and(|&byte| is_space(byte)) {
        at += 1;
    }
    at
}

/// Just past the value that starts at `start`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'"' => string_end(json, start),
        b'{' | b'[' => nested_end(json, start),
        _ => {
            // A number or a literal runs to the next delimiter.
            let len = json[start..]
                .iter()
                .position(|&byte| matches!(byte, b',' | b'}' | b']') || is_space(byte))
                .unwrap_or(json.len() - start);
            (len > 0).then_some(start + len)
        }
    }
}

/// Just past the quote closing the string that opens at `start`.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        at += quote_or_backslash(json.get(at..)?)?;
        if json[at] == b'"' {
            return Some(at + 1);
        }
        // A backslash: whatever it escapes cannot end the string.
        at += 2;
    }
}

/// Where the first `"` or `\\` of `haystack` is. Most strings of a request's structure are
/// short (its keys, a role, a model's name), and memchr's vector search costs more to set up
/// than they take to scan (profiled: about 60 instructions a call): the first bytes are
/// searched a word at a time here, and only a longer string (a prompt) is handed to memchr.
fn quote_or_backslash(haystack: &[u8]) -> Option<usize> {
    const WORD: usize = 8;
    const SCANNED_HERE: usize = 4 * WORD;
    let mut at = 0;
    while at < SCANNED_HERE
        && let Some(word) = haystack.get(at..at + WORD)
    {
        let word = u64::from_le_bytes(word.try_into().expect("a word's bytes"));
        let found = bytes_equal_to(word, b'"') | bytes_equal_to(word, b'\\');
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += WORD;
    }
    memchr2(b'"', b'\\', &haystack[at..]).map(|found| at + found)
}

/// The high bit set in each byte of `word` (little-endian) equal to `byte`, and possibly in
/// bytes after the first such one (a borrow can carry into them): the lowest set bit is
/// always the first match, which is all [`quote_or_backslash`] reads.
fn bytes_equal_to(word: u64, byte: u8) -> u64 {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_where_equal = word ^ (ONES * u64::from(byte));
    zero_where_equal.wrapping_sub(ONES) & !zero_where_equal & HIGHS
}

/// Just past the bracket closing the array or object that opens at `start`.
fn nested_end(json: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = start;
    loop {
        match json.get(at)? {
            b'"' => {
                at = string_end(json, at)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            _ => {}
        }
        at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(json: &str) -> Option<Vec<(String, String)>> {
        let mut found = Vec::new();
        let len = each_member(json.as_bytes(), |key, value| {
            found.push((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ));
            Some(())
        })?;
        only_space_after(json.as_bytes(), len)?;
        Some(found)
    }

    fn pairs(expected: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            expected
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        )
    }

    #[test]
    fn values_are_taken_whole_whatever_they_hold() {
        let json = r#" { "messages" : [{"role":"user","content":"a \"quoted\" } and ] \\"}],
            "n":12, "s":"x\\", "t":true ,"o":{"a":[1,{"b":"}"}]},"z":null}
        "#;
        assert_eq!(
            members(json),
            pairs(&[
                (
                    "messages",
                    r#"[{"role":"user","content":"a \"quoted\" } and ] \\"}]"#
                ),
                ("n", "12"),
                ("s", r#""x\\""#),
                ("t", "true"),
                ("o", r#"{"a":[1,{"b":"}"}]}"#),
                ("z", "null"),
            ])
        );
        let long = r#"{"a long key, longer than sixteen bytes":"a value with a \" after twenty bytes","b":1}"#;
        assert_eq!(
            members(long),
            pairs(&[
                (
                    "a long key, longer than sixteen bytes",
                    r#""a value with a \" after twenty bytes""#
                ),
                ("b", "1"),
            ])
        );
        assert_eq!(members("{}"), pairs(&[]));
        assert_eq!(members(" {\n}\n"), pairs(&[]));
    }

    #[test]
    fn what_is_not_one_object_is_given_up_on() {
        for json in [
            "",
            "[]",
            "{",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":1} x"#,
            r#"{"a":1}{}"#,
            r#"{"a":"unterminated}"#,
            r#"{"a":[1,2}"#,
            r#"{"a":"\"#,
            r#"{"a\u0062":1}"#,
            r#"{a:1}"#,
        ] {
            assert_eq!(members(json), None, "{json}");
        }
    }

    #[test]
    fn counts_and_flags_are_read_only_when_plain() {
        assert_eq!(count(b"0"), Some(0));
        assert_eq!(count(b"18446744073709551615"), Some(u64::MAX));
        for unsure in [
            &b""[..],
            b"05",
            b"-1",
            b"1.0",
            b"1e3",
            b"\"1\"",
            b"null",
            b"18446744073709551616",
        ] {
            assert_eq!(count(unsure), None, "{}", String::from_utf8_lossy(unsure));
        }
        assert_eq!(
            (flag(b"true"), flag(b"false"), flag(b"1")),
            (Some(true), Some(false), None)
        );
        assert_eq!(nullable(b"null", count), Some(None));
        assert_eq!(nullable(b"7", count), Some(Some(7)));
        assert_eq!(nullable(b"7.0", count), None, "what `read` gives up on");
    }

    #[test]
    fn fields_are_picked_out_and_a_repeated_one_is_given_up_on() {
        let read = |json: &str| {
            let mut found = Vec::new();
            let len = each_field(json.as_bytes(), &[b"b", b"d"], |name, value| {
                found.push((name, value.to_vec()));
                Some(())
            })?;
            Some((found, len))
        };
        let json = r#"{"a":1,"b":2,"c":{"b":9},"d":"x"} trailing"#;
        assert_eq!(
            read(json),
            Some((
                vec![(&b"b"[..], b"2".to_vec()), (&b"d"[..], br#""x""#.to_vec())],
                json.len() - " trailing".len()
            ))
        );
        assert_eq!(read(r#"{"b":1,"a":2,"b":1}"#), None);
        assert!(
            read(r#"{"a":1,"a":2}"#).is_some(),
            "only listed fields count"
        );
    }

    proptest::proptest! {
        /// Quotes and backslashes at every offset, before and after the words scanned here,
        /// beside bytes that differ from them by one bit or borrow in the word arithmetic.
        #[test]
        fn the_word_scan_finds_what_memchr_finds(haystack in proptest::collection::vec(
            proptest::prop_oneof![
                1 => proptest::strategy::Just(b'"'),
                1 => proptest::strategy::Just(b'\\'),
                2 => proptest::sample::select(vec![0x00, 0x01, b'!', b'#', b'[', b']', 0x80, 0xa2, 0xdc, 0xff]),
                20 => proptest::prelude::any::<u8>(),
            ],
            0..80,
        )) {
            proptest::prop_assert_eq!(quote_or_backslash(&haystack), memchr2(b'"', b'\\', &haystack));
        }
    }

    #[test]
    fn the_caller_can_stop_the_walk() {
        let mut seen = 0;
        let walked = each_member(br#"{"a":1,"b":2,"c":3}"#, |key, _| {
            seen += 1;
            (key != b"b").then_some(())
        });
        assert_eq!((walked, seen), (None, 2));
    }
}

/// JSON for property tests of readers built on [`each_member`].
#[cfg(test)]
pub mod arbitrary {
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON value, nested up to three deep; strings hold quotes, brackets and non-ASCII.
    pub fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z\\\"{}\\[\\],: \n\u{e9}]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a-z_]{1,6}", inner), 0..4)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    /// The text of an object with `members` in order (a name may repeat, which a
    /// `serde_json::Value` cannot hold), with whitespace around every token when `spaced`.
    pub fn object_text(members: &[(String, Value)], spaced: bool) -> String {
        let gap = if spaced { " \n" } else { "" };
        let members: Vec<String> = members
            .iter()
            .map(|(name, value)| format!("{name:?}{gap}:{gap}{value}"))
            .collect();
        format!("{{{gap}{}{gap}}}", members.join(&format!("{gap},{gap}")))
    }
}
