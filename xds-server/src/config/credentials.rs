//! `upstream.credentials`: which source the signing credentials come from and, for `env`,
//! the credentials themselves, read from xds-server's environment. Errors name the variable,
//! never its value.

use super::{
    check::{Checker, quoted},
    file::CredentialsSection,
    model::{ConfigError, CredentialSettings, Env},
};
use crate::{credentials::source::Credentials, util::Secret};

const SOURCES: &str = "aws_chain or env";

pub(super) fn check_credentials(
    check: &Checker<'_>,
    raw: Option<&CredentialsSection>,
    env: Env<'_>,
) -> Result<CredentialSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(CredentialSettings::AwsChain);
    };
    let env_only = [
        ("access_key_id_env", raw.access_key_id_env.is_some()),
        ("secret_access_key_env", raw.secret_access_key_env.is_some()),
        ("session_token_env", raw.session_token_env.is_some()),
    ];
    match raw.source.as_deref().unwrap_or("aws_chain") {
        "aws_chain" => {
            if let Some((key, _)) = env_only.iter().find(|(_, set)| *set) {
                return Err(check.invalid(
                    &format!("upstream.credentials.{key}"),
                    "no value with source aws_chain (it only applies to source env)",
                    None,
                ));
            }
            Ok(CredentialSettings::AwsChain)
        }
        "env" => {
            let read = |key: &str, name: Option<&String>, holding: &str| {
                read_variable(check, key, name, holding, env)
            };
            let access_key_id = read(
                "access_key_id_env",
                raw.access_key_id_env.as_ref(),
                "the AWS access key id",
            )?;
            let secret_access_key = read(
                "secret_access_key_env",
                raw.secret_access_key_env.as_ref(),
                "the AWS secret access key",
            )?;
            let session_token = match &raw.session_token_env {
                None => None,
                Some(name) => Some(read(
                    "session_token_env",
                    Some(name),
                    "the AWS session token",
                )?),
            };
            Ok(CredentialSettings::Static(Credentials {
                access_key_id: access_key_id.expose().to_string(),
                secret_access_key,
                session_token,
                expires_at: None,
                provider: format!(
                    "env {}",
                    raw.access_key_id_env.as_deref().unwrap_or_default()
                ),
            }))
        }
        other => Err(check.invalid("upstream.credentials.source", SOURCES, Some(quoted(other)))),
    }
}

/// The value of the environment variable named at `upstream.credentials.{key}`: required,
/// a plausible variable name, set and not empty.
fn read_variable(
    check: &Checker<'_>,
    key: &str,
    name: Option<&String>,
    holding: &str,
    env: Env<'_>,
) -> Result<Secret, ConfigError> {
    let key = format!("upstream.credentials.{key}");
    let expected = format!("the name of an environment variable of xds-server holding {holding}");
    let Some(name) = name else {
        return Err(check.invalid(
            &key,
            &format!("{expected} (required with source env)"),
            None,
        ));
    };
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(check.invalid(&key, &expected, Some(quoted(name))));
    }
    match env(name) {
        Some(value) if !value.is_empty() => Ok(Secret::new(value)),
        _ => Err(check.invalid(
            &key,
            &expected,
            Some(format!("{} (unset or empty)", quoted(name))),
        )),
    }
}
