//! What the gateway reads from a request body, in one pass over the pieces as they arrive and
//! in fixed memory: the models an operation names in its body (for access, quotas, the ledger
//! and the audit log), and what a token estimate needs (characters of text, bytes of media,
//! the output cap the request sets).
//!
//! Model paths are key paths from the top of the body; arrays along the way are transparent.
//! Keys are compared without regard to ASCII case, and a key that leads to a model may appear
//! once per object in any spelling: a reader that takes the last of two `modelId`s, or that
//! ignores case, cannot be made to see another model than the gateway did.

use gateway_common::model;

use super::json::{Events, JsonError, Tokenizer};

/// Output caps by the field names the Bedrock APIs and model families use.
pub const OUTPUT_CAPS: [&[&str]; 7] = [
    &["inferenceConfig", "maxTokens"],          // Converse
    &["max_tokens"],                            // Anthropic, Mistral, Cohere, OpenAI-style
    &["max_tokens_to_sample"],                  // Anthropic text completions
    &["max_gen_len"],                           // Meta Llama
    &["textGenerationConfig", "maxTokenCount"], // Amazon Titan
    &["inferenceConfig", "max_new_tokens"],     // Amazon Nova
    &["maxTokens"],                             // AI21
];

/// Keys whose string values (or arrays of strings) are base64 media, not text: Converse's
/// `bytes`, Anthropic's `data`, and the image fields of the image and multimodal models.
pub const MEDIA_KEYS: [&str; 6] = ["bytes", "data", "image", "images", "inputImage", "video"];

/// Distinct models one body may name.
pub const MAX_MODELS: usize = 64;
/// Levels of nesting whose keys are followed; deeper values only count as text.
const TRACKED_DEPTH: usize = 32;
/// Longest key compared with a path (longer ones match nothing).
const MAX_KEY_BYTES: usize = 64;

/// Why a body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    NotJson(JsonError),
    /// A model field holds something other than a string.
    ModelNotString,
    /// A key on the way to a model appears twice in one object.
    DuplicateKey,
    /// The model field holds no valid model reference.
    InvalidModel,
    TooManyModels,
}

impl BodyError {
    pub fn message(self) -> &'static str {
        match self {
            BodyError::NotJson(_) => "The request body is not valid JSON.",
            BodyError::ModelNotString => "A model field of the request body is not a string.",
            BodyError::DuplicateKey => {
                "The request body names a model field more than once (keys are compared without regard to case)."
            }
            BodyError::InvalidModel => {
                "A model field of the request body does not hold a valid model identifier."
            }
            BodyError::TooManyModels => "The request body names too many models.",
        }
    }
}

/// What was read from a body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyFacts {
    /// Models named by the body, the primary one (of the first path in the table's order)
    /// first, each once.
    pub models: Vec<String>,
    /// Characters of text in string values (media excluded).
    pub text_chars: u64,
    /// Bytes of media, decoded from their base64 length.
    pub media_bytes: u64,
    /// The largest output cap the body sets.
    pub output_cap: Option<u64>,
    pub body_bytes: u64,
    /// Whether the body was one JSON value.
    pub json: bool,
    /// A value stood at an undetermined path: the body may name models beyond `models`.
    pub beyond_table: bool,
}

/// Reads a body piece by piece.
pub struct BodyReader {
    tokenizer: Tokenizer,
    collector: Collector,
}

impl BodyReader {
    /// A reader looking for models at `model_paths`, and for values at `undetermined` paths
    /// (where the body may name models beyond those).
    pub fn new(
        model_paths: &'static [&'static [&'static str]],
        undetermined: &'static [&'static [&'static str]],
    ) -> Self {
        // Masks are 128 bits: a table with more paths for one operation fails the table's
        // test; here the extra paths would count as undetermined from the start.
        let room = 128 - OUTPUT_CAPS.len();
        let overflow = model_paths.len() + undetermined.len() > room;
        let mut patterns: Vec<&'static [&'static str]> =
            model_paths.iter().copied().take(room).collect();
        let models = patterns.len();
        patterns.extend(undetermined.iter().copied().take(room - models));
        let undetermined_end = patterns.len();
        patterns.extend(OUTPUT_CAPS);
        Self {
            tokenizer: Tokenizer::default(),
            collector: Collector {
                root: first_bits(patterns.len()),
                patterns,
                model_patterns: models,
                undetermined_end,
                frames: Vec::new(),
                untracked: 0,
                member: None,
                key: Vec::new(),
                key_long: false,
                string: StringTarget::Key,
                model_text: Vec::new(),
                found: Vec::new(),
                facts: BodyFacts {
                    beyond_table: overflow,
                    ..BodyFacts::default()
                },
                error: None,
            },
        }
    }

    pub fn feed(&mut self, piece: &[u8]) {
        self.collector.facts.body_bytes = self
            .collector
            .facts
            .body_bytes
            .saturating_add(piece.len() as u64);
        if self.collector.error.is_none() {
            self.tokenizer.feed(piece, &mut self.collector);
        }
    }

    /// The facts, or why the body is refused. `require_json`: a body that is not JSON is an
    /// error (operations that name their model in the body); otherwise it is all text.
    pub fn finish(mut self, require_json: bool) -> Result<BodyFacts, BodyError> {
        let read = match self.collector.error {
            Some(error) => Err(error),
            None => self
                .tokenizer
                .finish(&mut self.collector)
                .map_err(BodyError::NotJson),
        };
        let mut facts = std::mem::take(&mut self.collector.facts);
        match read.and(self.collector.error.map_or(Ok(()), Err)) {
            Ok(()) => facts.json = true,
            Err(BodyError::NotJson(_)) if !require_json => {
                return Ok(BodyFacts {
                    text_chars: facts.body_bytes,
                    body_bytes: facts.body_bytes,
                    ..BodyFacts::default()
                });
            }
            Err(error) => return Err(error),
        }
        let mut found = std::mem::take(&mut self.collector.found);
        found.sort_by_key(|(pattern, _)| *pattern);
        for (_, model) in found {
            if !facts.models.contains(&model) {
                facts.models.push(model);
            }
        }
        facts.media_bytes = facts.media_bytes / 4 * 3;
        Ok(facts)
    }
}

/// Where the current container sits.
struct Frame {
    object: bool,
    /// Keys on the path to this container.
    keys: usize,
    /// Patterns whose first `keys` keys are that path.
    mask: u128,
    media: bool,
    /// Keys of this object that lead to a model, lower case (each may appear once).
    seen: Vec<Vec<u8>>,
}

/// The context a value is read in.
#[derive(Clone, Copy)]
struct Context {
    keys: usize,
    mask: u128,
    media: bool,
}

enum StringTarget {
    Key,
    Text { media: bool },
    Model { pattern: usize, media: bool },
}

struct Collector {
    patterns: Vec<&'static [&'static str]>,
    /// Patterns `..model_patterns` are model paths, `model_patterns..undetermined_end`
    /// undetermined paths, the rest output caps.
    model_patterns: usize,
    undetermined_end: usize,
    root: u128,
    frames: Vec<Frame>,
    /// Open containers deeper than [`TRACKED_DEPTH`].
    untracked: usize,
    /// The context of the member whose key was just read.
    member: Option<Context>,
    key: Vec<u8>,
    key_long: bool,
    string: StringTarget,
    model_text: Vec<u8>,
    found: Vec<(usize, String)>,
    facts: BodyFacts,
    error: Option<BodyError>,
}

impl Collector {
    fn fail(&mut self, error: BodyError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// The context of the value that starts now.
    fn context(&mut self) -> Context {
        if self.untracked > 0 {
            return Context {
                keys: usize::MAX,
                mask: 0,
                media: false,
            };
        }
        match self.frames.last() {
            None => Context {
                keys: 0,
                mask: self.root,
                media: false,
            },
            Some(frame) if frame.object => self.member.take().unwrap_or(Context {
                keys: usize::MAX,
                mask: 0,
                media: false,
            }),
            // Arrays are transparent.
            Some(frame) => Context {
                keys: frame.keys,
                mask: frame.mask,
                media: frame.media,
            },
        }
    }

    /// The patterns that end exactly here.
    fn complete(&self, context: Context) -> u128 {
        if context.mask == 0 {
            return 0;
        }
        (0..self.patterns.len())
            .filter(|&i| context.mask >> i & 1 == 1 && self.patterns[i].len() == context.keys)
            .fold(0, |mask, i| mask | 1 << i)
    }

    /// The first model pattern that ends here, if any.
    fn model_here(&self, complete: u128) -> Option<usize> {
        let models = complete & first_bits(self.model_patterns);
        (models != 0).then(|| models.trailing_zeros() as usize)
    }

    /// Whether an output cap ends here.
    fn cap_here(&self, complete: u128) -> bool {
        complete & !first_bits(self.undetermined_end) != 0
    }

    /// A value starts: a non-null one at an undetermined path means models beyond the table;
    /// one that is not a string where a model was expected is refused.
    fn value_at(&mut self, complete: u128, string: bool, null: bool) {
        if null {
            return;
        }
        let undetermined = first_bits(self.undetermined_end) & !first_bits(self.model_patterns);
        if complete & undetermined != 0 {
            self.facts.beyond_table = true;
        }
        if !string && self.model_here(complete).is_some() {
            self.fail(BodyError::ModelNotString);
        }
    }
}

impl Events for Collector {
    fn open(&mut self, object: bool) {
        let context = self.context();
        let complete = self.complete(context);
        self.value_at(complete, false, false);
        if self.untracked > 0 || self.frames.len() >= TRACKED_DEPTH {
            self.untracked += 1;
            return;
        }
        let keys = context.keys;
        let mask = if keys == usize::MAX {
            0
        } else {
            let mut mask = context.mask;
            for (i, pattern) in self.patterns.iter().enumerate() {
                if pattern.len() <= keys {
                    mask &= !(1 << i);
                }
            }
            mask
        };
        self.frames.push(Frame {
            object,
            keys,
            mask,
            media: context.media,
            seen: Vec::new(),
        });
    }

    fn close(&mut self) {
        if self.untracked > 0 {
            self.untracked -= 1;
        } else {
            self.frames.pop();
        }
        self.member = None;
    }

    fn string_start(&mut self, key: bool) {
        if key {
            self.key.clear();
            self.key_long = false;
            self.string = StringTarget::Key;
            return;
        }
        let context = self.context();
        let complete = self.complete(context);
        self.value_at(complete, true, false);
        self.string = match self.model_here(complete) {
            Some(pattern) => {
                self.model_text.clear();
                StringTarget::Model {
                    pattern,
                    media: context.media,
                }
            }
            None => StringTarget::Text {
                media: context.media,
            },
        };
    }

    fn string_piece(&mut self, bytes: &[u8]) {
        match self.string {
            StringTarget::Key => {
                if self.key.len() + bytes.len() > MAX_KEY_BYTES {
                    self.key_long = true;
                } else {
                    self.key.extend_from_slice(bytes);
                }
            }
            StringTarget::Text { media } | StringTarget::Model { media, .. } => {
                if let StringTarget::Model { .. } = self.string
                    && self.model_text.len() <= model::MAX_MODEL_ID_BYTES
                {
                    let room = model::MAX_MODEL_ID_BYTES + 1 - self.model_text.len();
                    self.model_text
                        .extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                if media {
                    self.facts.media_bytes =
                        self.facts.media_bytes.saturating_add(bytes.len() as u64);
                } else {
                    // Characters: every byte that does not continue a UTF-8 sequence.
                    let chars = bytes.iter().filter(|&&b| b & 0xc0 != 0x80).count();
                    self.facts.text_chars = self.facts.text_chars.saturating_add(chars as u64);
                }
            }
        }
    }

    fn string_end(&mut self) {
        match std::mem::replace(&mut self.string, StringTarget::Key) {
            StringTarget::Key => self.member_key(),
            StringTarget::Text { .. } => {}
            StringTarget::Model { pattern, .. } => {
                let text = std::mem::take(&mut self.model_text);
                match String::from_utf8(text) {
                    Ok(model) if model::is_valid(&model) => {
                        let full = self.found.len() >= MAX_MODELS;
                        match self.found.iter_mut().find(|(_, m)| *m == model) {
                            Some(entry) => entry.0 = entry.0.min(pattern),
                            None if full => self.fail(BodyError::TooManyModels),
                            None => self.found.push((pattern, model)),
                        }
                    }
                    _ => self.fail(BodyError::InvalidModel),
                }
            }
        }
    }

    fn number(&mut self, integer: Option<u64>) {
        let context = self.context();
        let complete = self.complete(context);
        self.value_at(complete, false, false);
        if let Some(value) = integer
            && self.cap_here(complete)
        {
            self.facts.output_cap = Some(self.facts.output_cap.map_or(value, |c| c.max(value)));
        }
    }

    fn literal(&mut self, value: Option<bool>) {
        let context = self.context();
        let complete = self.complete(context);
        self.value_at(complete, false, value.is_none());
    }
}

impl Collector {
    /// A member key was read: the context its value will be read in.
    fn member_key(&mut self) {
        let media = !self.key_long && MEDIA_KEYS.iter().any(|k| k.as_bytes() == self.key);
        let Some(frame) = self.frames.last_mut().filter(|_| self.untracked == 0) else {
            return;
        };
        let keys = frame.keys;
        let mut mask = 0;
        if !self.key_long && frame.mask != 0 {
            for (i, pattern) in self.patterns.iter().enumerate() {
                if frame.mask >> i & 1 == 1
                    && pattern
                        .get(keys)
                        .is_some_and(|k| k.as_bytes().eq_ignore_ascii_case(&self.key))
                {
                    mask |= 1 << i;
                }
            }
        }
        if mask & first_bits(self.model_patterns) != 0 {
            let lower = self.key.to_ascii_lowercase();
            if frame.seen.contains(&lower) {
                self.error.get_or_insert(BodyError::DuplicateKey);
            } else {
                frame.seen.push(lower);
            }
        }
        self.member = Some(Context {
            keys: keys + 1,
            mask,
            media,
        });
    }
}

/// A mask of the first `n` patterns.
fn first_bits(n: usize) -> u128 {
    if n >= 128 { u128::MAX } else { (1 << n) - 1 }
}

#[cfg(test)]
mod tests;
