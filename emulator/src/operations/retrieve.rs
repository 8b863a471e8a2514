//! Retrieve (bedrock-agent-runtime): deterministic passages from an imaginary knowledge base.

use serde::Deserialize;
use serde_json::json;

use super::common::{Response, parse_json};
use super::error::ApiError;

pub const DEFAULT_RESULTS: i64 = 3;
pub const MAX_RESULTS: i64 = 100;

#[derive(Debug, Deserialize)]
struct RetrievalQuery {
    text: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VectorSearchConfiguration {
    #[serde(default)]
    number_of_results: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetrievalConfiguration {
    #[serde(default)]
    vector_search_configuration: Option<VectorSearchConfiguration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetrieveRequest {
    retrieval_query: RetrievalQuery,
    #[serde(default)]
    retrieval_configuration: Option<RetrievalConfiguration>,
}

/// Passage `index` (1-based) of knowledge base `kb` for `query`.
pub fn passage(kb: &str, query: &str, index: i64) -> String {
    format!("Passage {index} from knowledge base {kb} about: {query}")
}

pub(super) fn retrieve(knowledge_base_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let request: RetrieveRequest = parse_json(body)?;
    let k = request
        .retrieval_configuration
        .and_then(|c| c.vector_search_configuration)
        .and_then(|v| v.number_of_results)
        .unwrap_or(DEFAULT_RESULTS);
    if !(1..=MAX_RESULTS).contains(&k) {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{k}' at \
             'retrievalConfiguration.vectorSearchConfiguration.numberOfResults' failed to satisfy \
             constraint: Member must have value between 1 and {MAX_RESULTS}"
        )));
    }
    let query = &request.retrieval_query.text;
    let results: Vec<_> = (1..=k)
        .map(|i| {
            json!({
                "content": {"text": passage(knowledge_base_id, query, i)},
                "location": {
                    "type": "S3",
                    "s3Location": {"uri": format!("s3://emulator-kb/{knowledge_base_id}/doc-{i}.txt")},
                },
                // 1.0, then evenly down towards 0 (never reaching it).
                "score": (k - i + 1) as f64 / k as f64,
            })
        })
        .collect();
    Ok(Response::json(&json!({ "retrievalResults": results })))
}
