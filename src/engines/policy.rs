//! STUB: ACL policies (being written). This placeholder only fixes the API the rest of the crate uses; it grants
//! nothing but root.

use serde::{Deserialize, Serialize};

/// Vigil's built-in `default` policy.
pub const DEFAULT_POLICY: &str = "path \"auth/token/lookup-self\" {\n  capabilities = [\"read\"]\n}\n";

/// A capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// create
    Create,
    /// read
    Read,
    /// update
    Update,
    /// patch
    Patch,
    /// delete
    Delete,
    /// list
    List,
    /// sudo
    Sudo,
    /// deny
    Deny,
    /// subscribe
    Subscribe,
}

/// A set of capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities(u16);

impl Capabilities {
    /// Names in Vault's order.
    pub fn names(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// HCL text.
    pub text: String,
}

/// A policy that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to parse policy: line {line}: {message}")]
pub struct PolicyError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a policy.
pub fn parse(name: &str, text: &str) -> Result<Policy, PolicyError> {
    Ok(Policy { name: name.into(), text: text.into() })
}

/// Normalizes and validates a policy name.
pub fn validate_name(name: &str) -> Result<String, String> {
    Ok(name.to_lowercase())
}

/// The combined ACL of several policies.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    root: bool,
}

impl Acl {
    /// The ACL of `policies`.
    pub fn new(_policies: &[Policy]) -> Acl {
        Acl { root: false }
    }
    /// Everything allowed.
    pub fn root() -> Acl {
        Acl { root: true }
    }
    /// Capabilities on `path`.
    pub fn capabilities(&self, _path: &str) -> Capabilities {
        Capabilities::default()
    }
    /// Whether `cap` is allowed on `path`.
    pub fn allows(&self, _path: &str, _cap: Capability) -> bool {
        self.root
    }
}
