//! The completion text, built once per mock so requests only slice it.

/// One "token" each; every word is JSON-safe and ends with a space so deltas concatenate into
/// the non-streamed content exactly.
const WORDS: [&str; 16] = [
    "Sluice ",
    "mock ",
    "reply: ",
    "the ",
    "quick ",
    "brown ",
    "fox ",
    "jumps ",
    "over ",
    "the ",
    "lazy ",
    "dog ",
    "while ",
    "tokens ",
    "keep ",
    "flowing. ",
];

/// The first `max_tokens` tokens of the mock's endless sentence.
#[derive(Debug)]
pub(crate) struct Script {
    text: String,
    /// `ends[i]` is where token `i` ends in `text`.
    ends: Vec<usize>,
}

impl Script {
    pub fn new(max_tokens: u32) -> Self {
        let mut text = String::new();
        let mut ends = Vec::with_capacity(max_tokens as usize);
        for word in WORDS.iter().cycle().take(max_tokens as usize) {
            text.push_str(word);
            ends.push(text.len());
        }
        Self { text, ends }
    }

    /// The text of the first `tokens` tokens (all of them if there are fewer).
    pub fn content(&self, tokens: u32) -> &str {
        match (tokens as usize).checked_sub(1) {
            None => "",
            Some(last) => &self.text[..self.ends.get(last).copied().unwrap_or(self.text.len())],
        }
    }

    /// Token `index` on its own.
    pub fn token(&self, index: u32) -> &str {
        let index = index as usize;
        let Some(&end) = self.ends.get(index) else {
            return "";
        };
        let start = index.checked_sub(1).map_or(0, |prev| self.ends[prev]);
        &self.text[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_concatenate_into_the_content() {
        let script = Script::new(20);
        let joined: String = (0..20).map(|i| script.token(i)).collect();
        assert_eq!(joined, script.content(20));
        assert_eq!(script.token(0), "Sluice ");
        assert_eq!(script.token(16), "Sluice ");
        assert_eq!(script.content(2), "Sluice mock ");
    }

    #[test]
    fn out_of_range_is_empty_or_everything() {
        let script = Script::new(2);
        assert_eq!(script.content(0), "");
        assert_eq!(script.content(5), "Sluice mock ");
        assert_eq!(script.token(2), "");
    }
}
