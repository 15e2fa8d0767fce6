//! Word splitting and variable expansion, with the quoting rules of Dockerfile instructions.
//!
//! Splitting ([`split_words`]) cuts an argument string at unquoted whitespace and keeps quotes and
//! escapes in the words. Expansion ([`expand`]) then processes one word: it removes quotes,
//! resolves escapes and replaces `$VAR`, `${VAR}` and the `${VAR:-default}` family.

use std::fmt;

/// Why a word could not be expanded. The planner adds the line and the instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `${` without its closing `}`.
    MissingBrace,
    /// `${}`, `${:x}`, `${{x}` or another `${` not followed by a variable name.
    BadSubstitution,
    /// `${NAME<op>...}` with an operator outside the supported set.
    UnsupportedOperator(String),
    /// A quote without its closing partner.
    UnterminatedQuote(char),
    /// `${NAME?message}` or `${NAME:?message}` with `NAME` unset (or empty, for `:?`).
    Required { name: String, message: String },
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::MissingBrace => f.write_str("\"${\" is missing its closing \"}\""),
            ExpandError::BadSubstitution => {
                f.write_str("bad substitution: \"${\" must be followed by a variable name")
            }
            ExpandError::UnsupportedOperator(op) => write!(
                f,
                "unsupported substitution \"{op}\"; use ${{NAME}}, ${{NAME:-default}}, \
                 ${{NAME-default}}, ${{NAME:+alt}}, ${{NAME+alt}} or ${{NAME:?message}}"
            ),
            ExpandError::UnterminatedQuote(q) => write!(f, "unterminated {q} quote"),
            ExpandError::Required { name, message } if message.is_empty() => {
                write!(f, "{name} is not set")
            }
            ExpandError::Required { name, message } => write!(f, "{name} is not set: {message}"),
        }
    }
}

impl std::error::Error for ExpandError {}

/// Splits `text` at unquoted whitespace. Quotes and escapes stay in the words; a quoted empty
/// string (`""`) is a word of its own. An escape character at the very end is dropped.
pub fn split_words(text: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let mut words = Vec::new();
    let mut word = String::new();
    let mut blank_ok = false;
    let mut phase = Phase::Spaces;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match phase {
            Phase::Spaces if ch.is_whitespace() => continue,
            Phase::Spaces | Phase::Word => {
                if ch.is_whitespace() {
                    if blank_ok || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    blank_ok = false;
                    phase = Phase::Spaces;
                    continue;
                }
                phase = Phase::Word;
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                    word.push(ch);
                } else if ch == escape {
                    // An unquoted escape keeps itself and the next character, whatever it is.
                    if let Some(next) = chars.next() {
                        word.push(ch);
                        word.push(next);
                    }
                } else {
                    word.push(ch);
                }
            }
            Phase::Quote(quote) => {
                if ch == quote {
                    phase = Phase::Word;
                    word.push(ch);
                } else if ch == escape && quote != '\'' {
                    match chars.next() {
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                        None => phase = Phase::Word,
                    }
                } else {
                    word.push(ch);
                }
            }
        }
    }
    if phase != Phase::Spaces && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

/// Expands one word: removes quotes, resolves escapes and substitutes variables from `lookup`.
///
/// Single quotes keep everything literal. Inside double quotes the escape character escapes only
/// `"`, `$` and itself. Outside quotes it escapes any character, so `\$` is a literal `$`.
/// Unset variables expand to the empty string, as do the shell's special parameters (`$$`, `$?`,
/// `$1`...), which are never set during a build. A `$` not followed by a name stays literal.
pub fn expand(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let mut expander = Expander {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        lookup,
    };
    expander.process(None)
}

struct Expander<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Expander<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Processes up to `stop` (consumed) or the end of the word.
    fn process(&mut self, stop: Option<char>) -> Result<String, ExpandError> {
        let mut out = String::new();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok(out);
            }
            match ch {
                '\'' => out.push_str(&self.single_quoted()?),
                '"' => out.push_str(&self.double_quoted()?),
                '$' => out.push_str(&self.dollar()?),
                _ => {
                    self.pos += 1;
                    if ch == self.escape {
                        match self.next() {
                            Some(escaped) => out.push(escaped),
                            None => break,
                        }
                    } else {
                        out.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(_) => Err(ExpandError::MissingBrace),
            None => Ok(out),
        }
    }

    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(ExpandError::UnterminatedQuote('\'')),
                Some('\'') => return Ok(out),
                Some(ch) => out.push(ch),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(ExpandError::UnterminatedQuote('"')),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.pos += 1;
                                out.push(next);
                            }
                            Some(_) => out.push(ch),
                        }
                    } else {
                        out.push(ch);
                    }
                }
            }
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    fn dollar(&mut self) -> Result<String, ExpandError> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.get(&name).unwrap_or_default());
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err(ExpandError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandError::BadSubstitution),
            Some(_) => {}
        }
        let name = self.name();
        if name.is_empty() {
            return Err(ExpandError::BadSubstitution);
        }
        let (colon, op) = match self.next() {
            None => return Err(ExpandError::MissingBrace),
            Some('}') => return Ok(self.get(&name).unwrap_or_default()),
            Some(':') => (true, self.next()),
            Some(op) => (false, Some(op)),
        };
        let op = match op {
            None => return Err(ExpandError::MissingBrace),
            Some(op @ ('-' | '+' | '?')) => op,
            Some(other) => {
                let colon = if colon { ":" } else { "" };
                return Err(ExpandError::UnsupportedOperator(format!(
                    "${{{name}{colon}{other}"
                )));
            }
        };
        let word = self.process(Some('}'))?;
        let value = self.get(&name);
        // With a colon, an empty value counts as unset.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        match op {
            '-' if set => Ok(value.unwrap_or_default()),
            '-' => Ok(word),
            '+' if set => Ok(word),
            '+' => Ok(String::new()),
            _ if set => Ok(value.unwrap_or_default()),
            _ => Err(ExpandError::Required {
                name,
                message: word,
            }),
        }
    }

    /// Reads a variable name: letters, digits and `_`; or a run of digits (a positional
    /// parameter); or one special parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!') {
                self.pos += 1;
                return ch.to_string();
            }
            if !(ch.is_alphanumeric() || ch == '_') {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "B" => Some("b b".into()),
            "EMPTY" => Some(String::new()),
            "PATH" => Some("/usr/bin:/bin".into()),
            _ => None,
        }
    }

    fn ex(word: &str) -> Result<String, ExpandError> {
        expand(word, '\\', &env)
    }

    #[test]
    fn expansion_table() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("$A", "a"),
            ("${A}", "a"),
            ("x$A-y", "xa-y"),
            ("${A}bc", "abc"),
            ("$Abc", ""),
            ("$UNSET", ""),
            ("${UNSET}", ""),
            ("$B", "b b"),
            ("/opt:$PATH", "/opt:/usr/bin:/bin"),
            // ${VAR:-default} and friends, unset versus empty.
            ("${UNSET:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${A:-d}", "a"),
            ("${UNSET-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${A-d}", "a"),
            ("${UNSET:+x}", ""),
            ("${EMPTY:+x}", ""),
            ("${A:+x}", "x"),
            ("${UNSET+x}", ""),
            ("${EMPTY+x}", "x"),
            ("${A+x}", "x"),
            ("${A:?must be set}", "a"),
            ("${UNSET:-}", ""),
            ("${UNSET:-with space}", "with space"),
            // The default word is itself expanded, so nesting works.
            ("${UNSET:-${A}}", "a"),
            ("${UNSET:-$A/x}", "a/x"),
            ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
            ("${A:+${B}}", "b b"),
            // Escapes and literal dollars.
            ("\\$A", "$A"),
            ("\\${A}", "${A}"),
            ("a\\\\b", "a\\b"),
            ("a\\ b", "a b"),
            ("trailing$", "trailing$"),
            ("$", "$"),
            ("$/x", "$/x"),
            ("a$ b", "a$ b"),
            ("$$", ""),
            ("$1", ""),
            ("trailing\\", "trailing"),
            // Quotes.
            ("'$A'", "$A"),
            ("'a \\ b'", "a \\ b"),
            ("\"$A\"", "a"),
            ("\"${A} x\"", "a x"),
            ("\"a \\\" b\"", "a \" b"),
            ("\"a \\$A\"", "a $A"),
            ("\"a \\\\ b\"", "a \\ b"),
            ("\"a \\n b\"", "a \\n b"),
            ("\"it's\"", "it's"),
            ("'say \"hi\"'", "say \"hi\""),
            ("x\"y\"'z'", "xyz"),
            ("\"\"", ""),
        ];
        for (word, want) in cases {
            assert_eq!(ex(word).as_deref(), Ok(*want), "expanding {word:?}");
        }
    }

    #[test]
    fn expansion_errors() {
        let cases: &[(&str, ExpandError)] = &[
            ("${", ExpandError::MissingBrace),
            ("${A", ExpandError::MissingBrace),
            ("x${A:-d", ExpandError::MissingBrace),
            ("${A:", ExpandError::MissingBrace),
            ("${}", ExpandError::BadSubstitution),
            ("${:-x}", ExpandError::BadSubstitution),
            ("${{A}}", ExpandError::BadSubstitution),
            ("${/x}", ExpandError::BadSubstitution),
            ("${A%x}", ExpandError::UnsupportedOperator("${A%".into())),
            ("${A:=x}", ExpandError::UnsupportedOperator("${A:=".into())),
            ("'open", ExpandError::UnterminatedQuote('\'')),
            ("\"open", ExpandError::UnterminatedQuote('"')),
            (
                "${UNSET:?give it}",
                ExpandError::Required {
                    name: "UNSET".into(),
                    message: "give it".into(),
                },
            ),
            (
                "${EMPTY:?}",
                ExpandError::Required {
                    name: "EMPTY".into(),
                    message: String::new(),
                },
            ),
        ];
        for (word, want) in cases {
            assert_eq!(ex(word).as_ref(), Err(want), "expanding {word:?}");
        }
        assert_eq!(ex("${EMPTY?x}").as_deref(), Ok(""));
        assert_eq!(
            ExpandError::MissingBrace.to_string(),
            "\"${\" is missing its closing \"}\""
        );
    }

    #[test]
    fn backtick_escape() {
        let e = |w: &str| expand(w, '`', &env);
        assert_eq!(e("C:\\dir\\$A").as_deref(), Ok("C:\\dir\\a"));
        assert_eq!(e("`$A").as_deref(), Ok("$A"));
        assert_eq!(e("\"`\"\"").as_deref(), Ok("\""));
    }

    #[test]
    fn split_table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            ("a b  c", &["a", "b", "c"]),
            ("  a\tb ", &["a", "b"]),
            (
                "A=1 B=\"two words\" C='x y'",
                &["A=1", "B=\"two words\"", "C='x y'"],
            ),
            ("a\\ b c", &["a\\ b", "c"]),
            ("\"\" x", &["\"\"", "x"]),
            ("k=\"\"", &["k=\"\""]),
            ("\"a \\\" b\" c", &["\"a \\\" b\"", "c"]),
            ("'a \\' b", &["'a \\'", "b"]),
            ("x\\", &["x"]),
            ("\"unterminated quote", &["\"unterminated quote"]),
        ];
        for (text, want) in cases {
            assert_eq!(split_words(text, '\\'), *want, "splitting {text:?}");
        }
    }

    #[test]
    fn split_then_expand_removes_quotes() {
        let words: Vec<String> = split_words("K=\"v 2\" L='$A' M=$A\\ x", '\\')
            .iter()
            .map(|w| ex(w))
            .collect::<Result<_, _>>()
            .expect("valid words");
        assert_eq!(words, ["K=v 2", "L=$A", "M=a x"]);
    }
}
