//! Named tokens: `GET /api/v1/tokens` lists them, `POST` creates one (its secret is in that
//! answer and nowhere else), `DELETE /api/v1/tokens/{name}` revokes one. All need `admin`.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::reply::{json_response, Reply};
use crate::{
    api::{Api, Problem},
    tokens::{self, Caller, Role},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    role: String,
}

/// The caller of an admin route (authorize gives every such route one).
fn who(caller: Option<&Caller>) -> Result<&Caller, Problem> {
    caller.ok_or_else(|| {
        Problem(
            StatusCode::UNAUTHORIZED,
            "a token is required: send `Authorization: Bearer <token>`".into(),
        )
    })
}

pub(super) async fn list(api: &Api) -> Reply {
    let all = tokens::list(api.store.as_ref(), &api.cluster).await?;
    Ok(json_response(StatusCode::OK, &json!(all)))
}

pub(super) async fn create(api: &Api, caller: Option<&Caller>, body: &[u8]) -> Reply {
    let by = who(caller)?;
    let b: CreateBody =
        serde_json::from_slice(body).map_err(|e| Problem::bad(format!("body: {e}")))?;
    let role = Role::parse(&b.role).map_err(|e| Problem::bad(format!("role: {e}")))?;
    let (secret, info) =
        tokens::create(api.store.as_ref(), &api.cluster, &b.name, role, by).await?;
    let mut v = json!(info);
    v["token"] = json!(secret.expose());
    Ok(json_response(StatusCode::CREATED, &v))
}

pub(super) async fn revoke(api: &Api, caller: Option<&Caller>, name: &str) -> Reply {
    let by = who(caller)?;
    tokens::revoke(api.store.as_ref(), &api.cluster, name, by).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "name": name, "revoked": true }),
    ))
}
