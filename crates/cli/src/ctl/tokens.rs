//! `rota ctl token`: create, list and revoke the cluster's named tokens.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{json, Value};

use super::{
    args::TokenCommand,
    client::{segment, Client, Failure},
    table::{columns, print_json, text, time_of},
};

const TOKENS: &str = "/api/v1/tokens";

pub(super) async fn token(
    client: &Client,
    json: bool,
    command: TokenCommand,
) -> Result<ExitCode, Failure> {
    match command {
        TokenCommand::Create { name, role } => {
            let v = client
                .call(
                    Method::POST,
                    TOKENS,
                    Some(&json!({ "name": name, "role": role })),
                )
                .await?;
            if json {
                print_json(&v);
            } else {
                // The secret on standard output alone, so that it can be piped; the rest
                // on standard error.
                eprintln!(
                    "token `{}` created with role {}; it is shown this once, keep it now:",
                    text(&v["name"]),
                    text(&v["role"])
                );
                println!("{}", text(&v["token"]));
            }
        }
        TokenCommand::List => {
            let v = client.get(TOKENS).await?;
            if json {
                print_json(&v);
            } else {
                print!("{}", tokens_table(&v));
            }
        }
        TokenCommand::Revoke { name } => {
            let path = format!("{TOKENS}/{}", segment(&name));
            let v = client.call(Method::DELETE, &path, None).await?;
            if json {
                print_json(&v);
            } else {
                println!("token `{name}` revoked: every node refuses it now");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tokens_table(list: &Value) -> String {
    columns(
        list,
        &[
            ("NAME", |t| text(&t["name"])),
            ("ROLE", |t| text(&t["role"])),
            ("CREATED", |t| time_of(&t["created_at_ms"])),
            ("CREATED-BY", |t| text(&t["created_by"])),
        ],
    )
}
