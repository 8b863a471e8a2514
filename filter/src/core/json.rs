//! A strict JSON tokenizer (RFC 8259) that reads a body in the pieces Envoy hands over and
//! builds nothing: it reports what it reads to an [`Events`] visitor and keeps only its own
//! few bytes of state, so a 20 MiB body of nested arrays costs no more memory than a small
//! one. Strings are delivered decoded (escapes resolved, UTF-8 checked) in pieces; numbers are
//! delivered as an exact non-negative integer when they are one.

use super::path::hex;

/// What the tokenizer reports, in document order.
pub trait Events {
    /// `{` (`object` true) or `[` opens a value.
    fn open(&mut self, object: bool);
    /// The matching `}` or `]`.
    fn close(&mut self);
    /// A string starts: an object member's key or a value.
    fn string_start(&mut self, key: bool);
    /// Decoded UTF-8 bytes of the current string (a piece may end inside a character).
    fn string_piece(&mut self, bytes: &[u8]);
    fn string_end(&mut self);
    /// A number; `Some` when it is a non-negative integer that fits in a `u64`.
    fn number(&mut self, integer: Option<u64>);
    /// `true`, `false` (`Some`) or `null` (`None`).
    fn literal(&mut self, value: Option<bool>);
}

/// Why a body is not JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonError {
    /// A byte where the grammar allows none of its kind.
    Unexpected,
    /// A control character, bad escape, lone surrogate or invalid UTF-8 in a string.
    BadString,
    /// The body ended inside a value (or had none).
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value (top level, after `:`, after `,` in an array).
    Value,
    /// A value or `]` (just after `[`).
    ValueOrClose,
    /// A key or `}` (just after `{`).
    KeyOrClose,
    /// A key (after `,` in an object).
    Key,
    Colon,
    /// `,` or the container's close.
    CommaOrClose,
    /// Only white space (the top-level value is complete).
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Str {
    Plain,
    Escape,
    /// `\u` and the hex digits read so far; `high` is the high surrogate this escape must
    /// complete (0 when none).
    Unicode {
        digits: u8,
        value: u32,
        high: u32,
    },
    /// A high surrogate was read; `\` of the low one expected.
    LowBackslash {
        high: u32,
    },
    LowU {
        high: u32,
    },
    /// Continuation bytes still expected, and the range the next one must be in.
    Utf8 {
        left: u8,
        low: u8,
        high: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Between tokens.
    Idle,
    String {
        key: bool,
        state: Str,
    },
    Number {
        state: Num,
        value: Option<u64>,
    },
    /// A literal: the remaining bytes to match.
    Literal {
        rest: &'static [u8],
        value: Option<bool>,
    },
}

/// The tokenizer's state between pieces of a body.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    lex: Lex,
    expect: Expect,
    /// Open containers, innermost last: `true` for objects. Kept as a bit stack so that
    /// nesting costs one bit a level.
    stack: Vec<u64>,
    depth: usize,
    error: Option<JsonError>,
}

impl Default for Tokenizer {
    fn default() -> Self {
        Self {
            lex: Lex::Idle,
            expect: Expect::Value,
            stack: Vec::new(),
            depth: 0,
            error: None,
        }
    }
}

impl Tokenizer {
    pub fn error(&self) -> Option<JsonError> {
        self.error
    }

    /// Reads the next piece of the body; after an error nothing more is read.
    pub fn feed(&mut self, bytes: &[u8], events: &mut impl Events) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.run(bytes, events) {
            self.error = Some(e);
        }
    }

    /// The body ended: `Ok` when it was exactly one JSON value.
    pub fn finish(&mut self, events: &mut impl Events) -> Result<(), JsonError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if let Lex::Number { state, value } = self.lex {
            if !matches!(state, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits) {
                return Err(self.fail(JsonError::Truncated));
            }
            events.number(value);
            self.lex = Lex::Idle;
            self.value_done();
        }
        if self.lex != Lex::Idle || self.expect != Expect::End {
            return Err(self.fail(JsonError::Truncated));
        }
        Ok(())
    }

    fn fail(&mut self, error: JsonError) -> JsonError {
        self.error = Some(error);
        error
    }

    fn top_is_object(&self) -> bool {
        self.depth > 0 && {
            let i = self.depth - 1;
            self.stack[i / 64] >> (i % 64) & 1 == 1
        }
    }

    fn push(&mut self, object: bool) {
        let i = self.depth;
        if i / 64 == self.stack.len() {
            self.stack.push(0);
        }
        let word = &mut self.stack[i / 64];
        if object {
            *word |= 1 << (i % 64);
        } else {
            *word &= !(1 << (i % 64));
        }
        self.depth += 1;
    }

    /// After a complete value: what may follow.
    fn value_done(&mut self) {
        self.expect = if self.depth == 0 {
            Expect::End
        } else {
            Expect::CommaOrClose
        };
    }

    fn run(&mut self, bytes: &[u8], events: &mut impl Events) -> Result<(), JsonError> {
        let mut i = 0;
        while i < bytes.len() {
            match self.lex {
                Lex::Idle => {
                    i = self.token(bytes, i, events)?;
                }
                Lex::String { key, state } => {
                    i = self.string(bytes, i, key, state, events)?;
                }
                Lex::Number { state, value } => {
                    let b = bytes[i];
                    match number_step(state, b) {
                        Some(next) => {
                            let value = match next {
                                Num::Zero => Some(0),
                                Num::Int => value.and_then(|v| {
                                    v.checked_mul(10)?.checked_add(u64::from(b - b'0'))
                                }),
                                _ => None,
                            };
                            self.lex = Lex::Number { state: next, value };
                            i += 1;
                        }
                        None => {
                            // The byte ends the number and is read again as a token.
                            if !matches!(state, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits) {
                                return Err(JsonError::Unexpected);
                            }
                            events.number(value);
                            self.lex = Lex::Idle;
                            self.value_done();
                        }
                    }
                }
                Lex::Literal { rest, value } => {
                    if bytes[i] != rest[0] {
                        return Err(JsonError::Unexpected);
                    }
                    i += 1;
                    if rest.len() == 1 {
                        events.literal(value);
                        self.lex = Lex::Idle;
                        self.value_done();
                    } else {
                        self.lex = Lex::Literal {
                            rest: &rest[1..],
                            value,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads structure at `bytes[i]`; returns where to go on.
    fn token(
        &mut self,
        bytes: &[u8],
        i: usize,
        events: &mut impl Events,
    ) -> Result<usize, JsonError> {
        let b = bytes[i];
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return Ok(i + 1);
        }
        match self.expect {
            Expect::End => Err(JsonError::Unexpected),
            Expect::Colon => {
                if b != b':' {
                    return Err(JsonError::Unexpected);
                }
                self.expect = Expect::Value;
                Ok(i + 1)
            }
            Expect::KeyOrClose | Expect::Key => match b {
                b'"' => {
                    events.string_start(true);
                    self.lex = Lex::String {
                        key: true,
                        state: Str::Plain,
                    };
                    Ok(i + 1)
                }
                b'}' if self.expect == Expect::KeyOrClose => {
                    self.close(events);
                    Ok(i + 1)
                }
                _ => Err(JsonError::Unexpected),
            },
            Expect::CommaOrClose => {
                let object = self.top_is_object();
                match b {
                    b',' => {
                        self.expect = if object { Expect::Key } else { Expect::Value };
                        Ok(i + 1)
                    }
                    b'}' if object => {
                        self.close(events);
                        Ok(i + 1)
                    }
                    b']' if !object => {
                        self.close(events);
                        Ok(i + 1)
                    }
                    _ => Err(JsonError::Unexpected),
                }
            }
            Expect::Value | Expect::ValueOrClose => {
                match b {
                    b']' if self.expect == Expect::ValueOrClose => self.close(events),
                    b'{' | b'[' => {
                        let object = b == b'{';
                        self.push(object);
                        events.open(object);
                        self.expect = if object {
                            Expect::KeyOrClose
                        } else {
                            Expect::ValueOrClose
                        };
                    }
                    b'"' => {
                        events.string_start(false);
                        self.lex = Lex::String {
                            key: false,
                            state: Str::Plain,
                        };
                    }
                    b't' => {
                        self.lex = Lex::Literal {
                            rest: b"rue",
                            value: Some(true),
                        }
                    }
                    b'f' => {
                        self.lex = Lex::Literal {
                            rest: b"alse",
                            value: Some(false),
                        }
                    }
                    b'n' => {
                        self.lex = Lex::Literal {
                            rest: b"ull",
                            value: None,
                        }
                    }
                    b'-' => {
                        self.lex = Lex::Number {
                            state: Num::Minus,
                            value: None,
                        }
                    }
                    b'0' => {
                        self.lex = Lex::Number {
                            state: Num::Zero,
                            value: Some(0),
                        }
                    }
                    b'1'..=b'9' => {
                        self.lex = Lex::Number {
                            state: Num::Int,
                            value: Some(u64::from(b - b'0')),
                        }
                    }
                    _ => return Err(JsonError::Unexpected),
                }
                Ok(i + 1)
            }
        }
    }

    fn close(&mut self, events: &mut impl Events) {
        self.depth -= 1;
        events.close();
        self.value_done();
    }

    /// Reads string content from `bytes[i]`; returns where to go on.
    fn string(
        &mut self,
        bytes: &[u8],
        mut i: usize,
        key: bool,
        mut state: Str,
        events: &mut impl Events,
    ) -> Result<usize, JsonError> {
        while i < bytes.len() {
            match state {
                Str::Plain => {
                    // The common case: a run of plain ASCII, handed over in one piece.
                    let start = i;
                    while i < bytes.len()
                        && bytes[i] >= 0x20
                        && bytes[i] < 0x80
                        && bytes[i] != b'"'
                        && bytes[i] != b'\\'
                    {
                        i += 1;
                    }
                    if i > start {
                        events.string_piece(&bytes[start..i]);
                    }
                    let Some(&b) = bytes.get(i) else {
                        break;
                    };
                    i += 1;
                    match b {
                        b'"' => {
                            events.string_end();
                            self.lex = Lex::Idle;
                            if key {
                                self.expect = Expect::Colon;
                            } else {
                                self.value_done();
                            }
                            return Ok(i);
                        }
                        b'\\' => state = Str::Escape,
                        0x00..=0x1f => return Err(JsonError::BadString),
                        _ => {
                            state = utf8_lead(b).ok_or(JsonError::BadString)?;
                            events.string_piece(&[b]);
                        }
                    }
                }
                Str::Utf8 { left, low, high } => {
                    let b = bytes[i];
                    if !(low..=high).contains(&b) {
                        return Err(JsonError::BadString);
                    }
                    events.string_piece(&[b]);
                    i += 1;
                    state = if left == 1 {
                        Str::Plain
                    } else {
                        Str::Utf8 {
                            left: left - 1,
                            low: 0x80,
                            high: 0xbf,
                        }
                    };
                }
                Str::Escape => {
                    let decoded = match bytes[i] {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            i += 1;
                            state = Str::Unicode {
                                digits: 0,
                                value: 0,
                                high: 0,
                            };
                            continue;
                        }
                        _ => return Err(JsonError::BadString),
                    };
                    events.string_piece(&[decoded]);
                    i += 1;
                    state = Str::Plain;
                }
                Str::Unicode {
                    digits,
                    value,
                    high,
                } => {
                    let digit = hex(bytes[i]).ok_or(JsonError::BadString)?;
                    i += 1;
                    let value = value << 4 | u32::from(digit);
                    if digits < 3 {
                        state = Str::Unicode {
                            digits: digits + 1,
                            value,
                            high,
                        };
                        continue;
                    }
                    state = match (high, value) {
                        (0, 0xd800..=0xdbff) => Str::LowBackslash { high: value },
                        (0, 0xdc00..=0xdfff) => return Err(JsonError::BadString),
                        (0, _) => {
                            emit_char(value, events)?;
                            Str::Plain
                        }
                        (_, 0xdc00..=0xdfff) => {
                            emit_char(
                                0x10000 + ((high - 0xd800) << 10) + (value - 0xdc00),
                                events,
                            )?;
                            Str::Plain
                        }
                        _ => return Err(JsonError::BadString),
                    };
                }
                Str::LowBackslash { high } => {
                    if bytes[i] != b'\\' {
                        return Err(JsonError::BadString);
                    }
                    i += 1;
                    state = Str::LowU { high };
                }
                Str::LowU { high } => {
                    if bytes[i] != b'u' {
                        return Err(JsonError::BadString);
                    }
                    i += 1;
                    state = Str::Unicode {
                        digits: 0,
                        value: 0,
                        high,
                    };
                }
            }
        }
        self.lex = Lex::String { key, state };
        Ok(i)
    }
}

fn number_step(state: Num, b: u8) -> Option<Num> {
    let digit = b.is_ascii_digit();
    match (state, b) {
        (Num::Minus, b'0') => Some(Num::Zero),
        (Num::Minus, _) if digit => Some(Num::Int),
        (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
        (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::Exp),
        (Num::Int, _) if digit => Some(Num::Int),
        (Num::Dot | Num::Frac, _) if digit => Some(Num::Frac),
        (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
        (Num::Exp | Num::ExpSign | Num::ExpDigits, _) if digit => Some(Num::ExpDigits),
        _ => None,
    }
}

/// The state after a UTF-8 lead byte (RFC 3629: no overlong forms, no surrogates, at most
/// U+10FFFF).
fn utf8_lead(b: u8) -> Option<Str> {
    let (left, low, high) = match b {
        0xc2..=0xdf => (1, 0x80, 0xbf),
        0xe0 => (2, 0xa0, 0xbf),
        0xe1..=0xec | 0xee..=0xef => (2, 0x80, 0xbf),
        0xed => (2, 0x80, 0x9f),
        0xf0 => (3, 0x90, 0xbf),
        0xf1..=0xf3 => (3, 0x80, 0xbf),
        0xf4 => (3, 0x80, 0x8f),
        _ => return None,
    };
    Some(Str::Utf8 { left, low, high })
}

fn emit_char(value: u32, events: &mut impl Events) -> Result<(), JsonError> {
    let c = char::from_u32(value).ok_or(JsonError::BadString)?;
    let mut buf = [0; 4];
    events.string_piece(c.encode_utf8(&mut buf).as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests;
