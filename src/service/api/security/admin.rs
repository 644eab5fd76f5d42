//! The admin credential: the Reload RPC swaps the served models, so it needs a token of its
//! own, apart from the bearer tokens that let a client call the model.
//!
//! Admin tokens come from `admin_tokens_file` (one a line) and the environment variable
//! [`ADMIN_TOKENS_ENV`] (separated by commas or whitespace), parsed like the bearer tokens and,
//! like them, kept only as digests and never logged. A Reload call sends one as
//! `authorization: Bearer <admin token>`; with bearer tokens on, the authentication layer
//! accepts admin tokens too, so that one header does for both. Without any admin token, Reload
//! is refused: an operator on the host reloads with SIGHUP.

use super::tokens::{token_sources, Tokens};
use crate::service::config::ServeConfig;
use crate::service::error::ServiceError;

/// The environment variable that may hold admin tokens (separated by commas or whitespace).
pub const ADMIN_TOKENS_ENV: &str = "DIFFGAP_ADMIN_TOKENS";

/// The admin tokens of `cfg.admin_tokens_file` and of `env` (the value of
/// [`ADMIN_TOKENS_ENV`]); `None` when there is none. Errors name the key or the variable,
/// never a token.
pub fn load(cfg: &ServeConfig, env: Option<String>) -> Result<Option<Tokens>, String> {
    let tokens = token_sources(
        ("admin_tokens_file", &cfg.admin_tokens_file),
        (ADMIN_TOKENS_ENV, env),
        "refuse Reload",
    )?;
    Ok((!tokens.is_empty()).then(|| Tokens::new(tokens.iter().map(String::as_str))))
}

/// Whether a call with the `authorization` header value given may reload.
///
/// A missing token is UNAUTHENTICATED; a token that is not an admin one (a client's bearer
/// token, or a wrong one) and a server without admin tokens are PERMISSION_DENIED.
pub fn check(admin: Option<&Tokens>, authorization: Option<&[u8]>) -> Result<(), ServiceError> {
    let Some(admin) = admin else {
        return Err(ServiceError::PermissionDenied(format!(
            "Reload is disabled: the server has no admin token (admin_tokens_file or \
             {ADMIN_TOKENS_ENV}); reload with SIGHUP on its host"
        )));
    };
    const SCHEME: &[u8] = b"bearer ";
    let token = authorization
        .filter(|v| v.len() >= SCHEME.len() && v[..SCHEME.len()].eq_ignore_ascii_case(SCHEME))
        .map(|v| v[SCHEME.len()..].trim_ascii())
        .ok_or_else(|| {
            ServiceError::Unauthenticated(
                "Reload needs an admin token: send 'authorization: Bearer <admin token>'".into(),
            )
        })?;
    if admin.accepts(token) {
        Ok(())
    } else {
        Err(ServiceError::PermissionDenied(
            "Reload needs an admin token; the token sent is not one".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn code(r: Result<(), ServiceError>) -> Code {
        r.map_or_else(|e| tonic::Status::from(e).code(), |()| Code::Ok)
    }

    #[test]
    fn reload_needs_an_admin_token() {
        let admin = Tokens::new(["root-1"]);
        let a = Some(&admin);
        assert_eq!(code(check(a, Some(b"Bearer root-1"))), Code::Ok);
        assert_eq!(code(check(a, Some(b"bearer  root-1 "))), Code::Ok);
        assert_eq!(code(check(a, None)), Code::Unauthenticated);
        assert_eq!(code(check(a, Some(b"Basic root-1"))), Code::Unauthenticated);
        assert_eq!(
            code(check(a, Some(b"Bearer client"))),
            Code::PermissionDenied
        );
        assert_eq!(code(check(a, Some(b"Bearer "))), Code::PermissionDenied);
        let off = check(None, Some(b"Bearer root-1")).expect_err("disabled");
        let status = tonic::Status::from(off);
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().starts_with("Reload is disabled"),
            "{status:?}"
        );
    }

    #[test]
    fn admin_tokens_load_from_the_file_and_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(&ServeConfig::default(), None).expect("none").is_none());
        let file = dir.path().join("admin");
        std::fs::write(&file, "# ops\nroot-1\n").expect("write");
        let cfg = ServeConfig {
            admin_tokens_file: file.clone(),
            ..ServeConfig::default()
        };
        let t = load(&cfg, Some("root-2, root-3".into()))
            .expect("load")
            .expect("tokens");
        assert_eq!(t.len(), 3);
        assert!(t.accepts(b"root-1") && t.accepts(b"root-3"));
        std::fs::write(&file, "# none\n").expect("write");
        let e = load(&cfg, None).expect_err("empty file");
        assert!(
            e.starts_with("admin_tokens_file: ") && e.contains("holds no token"),
            "{e}"
        );
        let e = load(&ServeConfig::default(), Some(" ".into())).expect_err("empty env");
        assert!(e.starts_with("DIFFGAP_ADMIN_TOKENS: set but"), "{e}");
        let e = load(&ServeConfig::default(), Some("bad\u{7f}".into())).expect_err("bad");
        assert!(!e.contains("bad"), "the token is never echoed: {e}");
    }
}
