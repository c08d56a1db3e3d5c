//! Splitting the byte stream of an OVSDB connection into JSON messages.
//!
//! RFC 7047 sends JSON-RPC messages back to back with no delimiter, so the reader tracks
//! bracket depth outside of strings to find where each top-level object ends. Messages are
//! bounded in size and nesting depth; anything that cannot start or be a JSON object is an
//! error, including mismatched brackets (which would otherwise wait forever for the end).

use serde_json::Value as Json;

use crate::{Error, Result};

/// Deepest nesting accepted; OVSDB messages need about ten levels.
const MAX_DEPTH: usize = 128;

/// Incremental splitter: feed bytes with [`Splitter::push`], take messages with
/// [`Splitter::next_message`].
#[derive(Debug)]
pub(crate) struct Splitter {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned.
    pos: usize,
    /// Closing brackets expected, innermost last.
    stack: Vec<u8>,
    in_string: bool,
    escaped: bool,
    max: usize,
}

impl Splitter {
    pub(crate) fn new(max_message: usize) -> Splitter {
        Splitter {
            buf: Vec::new(),
            pos: 0,
            stack: Vec::new(),
            in_string: false,
            escaped: false,
            max: max_message,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// True while a message has started but not ended.
    pub(crate) fn is_partial(&self) -> bool {
        !self.stack.is_empty()
    }

    /// The next complete message, `Ok(None)` if more bytes are needed.
    pub(crate) fn next_message(&mut self) -> Result<Option<Json>> {
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            if self.stack.is_empty() {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' => {
                        // Drop the whitespace before the message.
                        self.buf.drain(..self.pos - 1);
                        self.pos = 1;
                        self.stack.push(b'}');
                        continue;
                    }
                    other => {
                        return Err(Error::Json(format!(
                            "expected '{{' at the start of a message, got byte 0x{other:02x}"
                        )));
                    }
                }
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                } else {
                    // Most of a message is strings: skip to the next byte that matters in one.
                    let rest = &self.buf[self.pos..];
                    self.pos += memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    if self.stack.len() >= MAX_DEPTH {
                        return Err(Error::Json(format!("nesting deeper than {MAX_DEPTH}")));
                    }
                    self.stack.push(if b == b'{' { b'}' } else { b']' });
                }
                b'}' | b']' => {
                    if self.stack.pop() != Some(b) {
                        return Err(Error::Json(format!("unexpected '{}'", b as char)));
                    }
                    if self.stack.is_empty() {
                        let msg = serde_json::from_slice(&self.buf[..self.pos]);
                        self.buf.drain(..self.pos);
                        self.pos = 0;
                        return msg.map(Some).map_err(|e| Error::Json(e.to_string()));
                    }
                }
                _ => {}
            }
        }
        if self.stack.is_empty() {
            // Only whitespace so far.
            self.buf.clear();
            self.pos = 0;
        } else if self.buf.len() > self.max {
            return Err(Error::MessageTooLarge { limit: self.max });
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &mut Splitter) -> Vec<Json> {
        let mut v = Vec::new();
        while let Some(m) = s.next_message().unwrap() {
            v.push(m);
        }
        v
    }

    #[test]
    fn splits_back_to_back_messages_fed_byte_by_byte() {
        let text = br#" {"a":"}{\"]","b":[1,{"c":2}]}
{"id":1}{"x":"\\"}"#;
        let mut s = Splitter::new(1024);
        let mut got = Vec::new();
        for b in text {
            s.push(&[*b]);
            got.extend(all(&mut s));
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0]["a"], "}{\"]");
        assert_eq!(got[1]["id"], 1);
        assert_eq!(got[2]["x"], "\\");
        assert!(!s.is_partial());
    }

    #[test]
    fn any_chunking_gives_the_same_messages() {
        let text = br#"{"a":"x\\\"y","b":["}]{[",{"c":"\\"}]} {"d":"long string without anything special in it"}
{"e":[1,2,{"f":"\"\"\""}]}"#;
        let mut whole = Splitter::new(1024);
        whole.push(text);
        let want = all(&mut whole);
        assert_eq!(want.len(), 3);
        assert_eq!(want[0]["a"], "x\\\"y");
        assert_eq!(want[2]["e"][2]["f"], "\"\"\"");
        for size in 1..text.len() {
            let mut s = Splitter::new(1024);
            let mut got = Vec::new();
            for chunk in text.chunks(size) {
                s.push(chunk);
                got.extend(all(&mut s));
            }
            assert_eq!(got, want, "chunks of {size}");
            assert!(!s.is_partial());
        }
    }

    #[test]
    fn rejects_garbage_and_oversized() {
        let mut s = Splitter::new(1024);
        s.push(b"[1,2]");
        assert!(matches!(s.next_message(), Err(Error::Json(_))));
        let mut s = Splitter::new(16);
        s.push(b"{\"a\":\"0123456789012345678\"");
        assert!(matches!(
            s.next_message(),
            Err(Error::MessageTooLarge { .. })
        ));
        let mut s = Splitter::new(1024);
        s.push(b"{\"a\":]");
        assert!(matches!(s.next_message(), Err(Error::Json(_))));
        let mut s = Splitter::new(1024);
        s.push(b"{\"a\":[}");
        assert!(matches!(s.next_message(), Err(Error::Json(_))));
        let mut s = Splitter::new(1 << 20);
        s.push(&vec![b'['; 1000]);
        s.push(b"{");
        assert!(s.next_message().is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut s = Splitter::new(1 << 20);
        let mut m = b"{\"a\":".to_vec();
        m.extend(std::iter::repeat_n(b'[', 100_000));
        m.extend(std::iter::repeat_n(b']', 100_000));
        m.push(b'}');
        s.push(&m);
        assert!(matches!(s.next_message(), Err(Error::Json(_))));
    }
}

/// A small deterministic generator for the no-panic tests (no extra dependency).
#[cfg(test)]
pub(crate) struct Rng(pub u64);

#[cfg(test)]
impl Rng {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    #[test]
    fn random_bytes_never_panic() {
        let alphabet = b"{}[]\":,\\ \n0123456789.eE-+truefalsnul\xff\xc3";
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..5000 {
            let mut s = Splitter::new(256);
            let len = rng.below(300);
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            if rng.below(2) == 0 {
                bytes.insert(0, b'{');
            }
            for chunk in bytes.chunks(1 + rng.below(16)) {
                s.push(chunk);
                while let Ok(Some(_)) = s.next_message() {}
            }
        }
    }
}
