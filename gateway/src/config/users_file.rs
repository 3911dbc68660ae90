//! Loading a users file ([`crate::basic_auth::users`]) that a section of the policy names:
//! read by gathering, parsed and compiled here, each problem at its line in that file.

use std::sync::Arc;

use super::context::CompileContext;
use super::yaml::Spanned;
use super::Diagnostic;
use crate::basic_auth::users::{Users, UsersFileSpec};

/// The users file `file` names (relative to the policy file); `option` is its path in the
/// policy (`saml_issuer.users_file`) for messages about the file as a whole. `None` when
/// something is wrong (every problem reported).
pub(crate) fn load(
    file: &Spanned<String>,
    option: &str,
    context: &mut CompileContext<'_>,
) -> Option<Users> {
    let (full, text) = context.named_text(file, option, "UTF-8 text")?;
    match parse(Arc::from(full.as_path()), text) {
        Ok(users) => Some(users),
        Err(found) => {
            context.errors.extend(found);
            None
        }
    }
}

/// Parses and compiles a users file's text (bounded by the policy parser's limits); every
/// problem with its position in `file`.
///
/// # Errors
/// Every problem found.
pub fn parse(file: Arc<std::path::Path>, text: &str) -> Result<Users, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let parsed = super::parse_text::<UsersFileSpec>(file.clone(), text, &mut errors);
    // Entries that parsed are still checked, so every mistake shows at once.
    let compiled = parsed.map(|parsed| Users::compile(&parsed.spec));
    if let Some(Err(found)) = &compiled {
        errors.extend(found.iter().map(|e| Diagnostic {
            file: file.clone(),
            loc: Some(e.loc),
            path: e.path.clone(),
            message: e.message.clone(),
        }));
    }
    match compiled {
        Some(Ok(users)) if errors.is_empty() => Ok(users),
        _ => Err(errors),
    }
}
