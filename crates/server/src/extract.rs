//! Extractors whose rejections are JSON errors that name what was wrong.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body: 400 when malformed, 422 when a field has the wrong type or
/// is unknown, 413 when too large, 415 without a JSON content type.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, bytes) = read_body(req, state).await?;
        parse_object(parts, bytes, state).await.map(ApiJson)
    }
}

/// Splits a request into its head and its whole body (413 when too large).
async fn read_body<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<(Parts, axum::body::Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
        .await
        .map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "request body too large")
            } else {
                ApiError::new(status, format!("could not read the body: {e}"))
            }
        })?;
    Ok((parts, bytes))
}

/// Decodes a JSON object body into `T`. serde would also read a struct from
/// an array (`["x"]`), which no client means: that is a 422.
async fn parse_object<T: DeserializeOwned, S: Send + Sync>(
    parts: Parts,
    bytes: axum::body::Bytes,
    state: &S,
) -> Result<T, ApiError> {
    let is_object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let req = Request::from_parts(parts, axum::body::Body::from(bytes));
    let axum::Json(v) = axum::Json::<T>::from_request(req, state)
        .await
        .map_err(json_rejection)?;
    if !is_object {
        return Err(ApiError::unprocessable(
            "invalid request body: must be a JSON object",
        ));
    }
    Ok(v)
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => {
            ApiError::unprocessable(format!("invalid request body: {}", source_text(&e)))
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("malformed JSON: {}", source_text(&e)))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected a JSON body with 'Content-Type: application/json'",
        ),
        JsonRejection::BytesRejection(e) => {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, "request body too large")
            } else {
                ApiError::new(status, format!("could not read the body: {e}"))
            }
        }
        other => ApiError::new(other.status(), other.body_text()),
    }
}

/// The innermost message of an error chain, e.g. "name: invalid type: …".
fn source_text(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Whether a raw (percent-encoded) URI part decodes to a NUL, which
/// PostgreSQL cannot compare or store in text columns.
fn has_nul(raw: &str) -> bool {
    raw.contains("%00")
}

/// Query parameters: 400 naming the bad parameter.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if has_nul(parts.uri.query().unwrap_or("")) {
            return Err(ApiError::bad_request(
                "invalid query string: NUL characters are not allowed",
            ));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::bad_request(
                format!("invalid query string: {}", source_text(&e)),
            )),
            Err(other) => Err(ApiError::bad_request(other.body_text())),
        }
    }
}

/// Path parameters: 400 when they do not parse.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if has_nul(parts.uri.path()) {
            return Err(ApiError::bad_request(
                "invalid path: NUL characters are not allowed",
            ));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => {
                Err(ApiError::bad_request(e.body_text()))
            }
            Err(e) => Err(ApiError::internal(e.body_text())),
        }
    }
}

/// A JSON body that may be left out entirely (an empty body means `T::default()`).
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, bytes) = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        // A body that is there must be a JSON object, as for [`ApiJson`].
        parse_object(parts, bytes, state).await.map(OptionalJson)
    }
}
