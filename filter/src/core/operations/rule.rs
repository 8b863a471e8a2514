//! The row type of the generated operations table (`table.rs`): one operation by service,
//! method and path pattern, and where its input names models.

/// One row of the generated table.
#[derive(Debug, Clone, Copy)]
pub struct OperationRule {
    pub service: &'static str,
    pub method: &'static str,
    /// `*` matches one non-empty segment; anything else literally.
    pub path: &'static str,
    pub name: &'static str,
    /// The path segment that names a model, if any.
    pub model_segment: Option<usize>,
    /// Key paths in the JSON body whose values name models (arrays along the way are
    /// transparent), the primary model's first.
    pub body_models: &'static [&'static [&'static str]],
    /// Key paths below which the body may name models the table does not list (a recursive
    /// structure unrolled only so far): a value there makes the call's models undetermined.
    pub undetermined: &'static [&'static [&'static str]],
}
