//! Users, groups and privileges, kept as one JSON document in the warehouse
//! (`_rxcube/access/directory.json`).
//!
//! A user has an account id (random, given when the user is added, so a name removed and added
//! again is another account), an argon2 password hash, an org [`Scope`] and group memberships; a
//! user's privileges are the union of its groups' privileges. Every change rewrites the
//! document in one atomic put (where the store supports it, conditional on the version read, so
//! two concurrent changes cannot silently drop one another).
//!
//! A signed-in session is bound to the account's [`Credential`] (account id, password hash,
//! scope, groups), not to its name: the server compares it with the current directory on every
//! call, so removing a user, adding the name again, or changing its password, scope or groups
//! ends every session signed in before.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::scope::{Level, Scope};
use crate::{AccessError, Result};

/// The directory holding the access documents, relative to the warehouse root.
pub const ACCESS_DIR: &str = "_rxcube/access";
const DOCUMENT: &str = "directory.json";

/// What a group lets its members do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// Connect and run queries (within the user's scope).
    Query,
    /// Read the audit log (`system.audit_log`).
    Audit,
}

impl Privilege {
    pub const ALL: [Privilege; 2] = [Privilege::Query, Privilege::Audit];

    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Query => "query",
            Privilege::Audit => "audit",
        }
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Privilege {
    type Err = AccessError;
    fn from_str(s: &str) -> Result<Self> {
        Privilege::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                AccessError::Invalid(format!("unknown privilege '{s}' (expected query or audit)"))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The account's id: random, given when the user is added. Empty in documents written
    /// before ids existed (the password hash, salted at random, then tells accounts apart).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// `level:node`, e.g. `region:West`, `pharmacy:4`, `division:ALL`.
    pub scope: Scope,
    /// The argon2id hash, PHC string format.
    pub password: String,
    pub groups: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub privileges: BTreeSet<Privilege>,
}

/// A signed-in user: who, where in the org, allowed to do what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scope: Scope,
    pub privileges: BTreeSet<Privilege>,
}

impl Principal {
    pub fn may(&self, p: Privilege) -> bool {
        self.privileges.contains(&p)
    }

    /// Whether the principal administers the warehouse: it reaches the whole division and may
    /// read the audit log (what every user ran). Nothing a plan tells, its row counts and
    /// timings, its files, which results the shared cache held, is then outside what it may
    /// see; the server shows plans in full (`EXPLAIN ANALYZE`, physical plans) to
    /// administrators only. A member of `administrators` with a narrower scope is not one.
    pub fn is_administrator(&self) -> bool {
        self.scope.level == Level::Division && self.may(Privilege::Audit)
    }
}

/// What a signed-in session stands for: one account as it was when it signed in. A session
/// whose credential is no longer the account's current one (the user was removed, or added
/// again under the same name, or its password, scope or groups changed) is over.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub name: String,
    /// The account id ([`User::id`]).
    pub account: String,
    password: String,
    scope: Scope,
    groups: BTreeSet<String>,
}

impl Credential {
    /// A digest of the whole credential, for keys naming it (the same in one process only).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.name, &self.account, &self.password).hash(&mut h);
        self.scope.to_string().hash(&mut h);
        self.groups.hash(&mut h);
        h.finish()
    }
}

impl fmt::Debug for Credential {
    /// Leaves the password hash out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("account", &self.account)
            .field("scope", &self.scope)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// A new random account id (128 bits, hex).
fn new_account_id() -> String {
    argon2::password_hash::generate_salt()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a sign-in failed. Deliberately coarse towards the client (the audit log keeps which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownUser,
    WrongPassword,
    NoQueryPrivilege,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::UnknownUser => "unknown user",
            Refusal::WrongPassword => "wrong password",
            Refusal::NoQueryPrivilege => "no group grants the query privilege",
        })
    }
}

/// The users and groups of a warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Directory {
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, Group>,
}

impl Default for Directory {
    /// No users; the built-in groups `analysts` (query) and `administrators` (query, audit).
    fn default() -> Self {
        let group = |p: &[Privilege]| Group {
            privileges: p.iter().copied().collect(),
        };
        Self {
            users: BTreeMap::new(),
            groups: BTreeMap::from([
                ("analysts".to_string(), group(&[Privilege::Query])),
                (
                    "administrators".to_string(),
                    group(&[Privilege::Query, Privilege::Audit]),
                ),
            ]),
        }
    }
}

/// A directory as read, with the store version a later save is conditional on.
#[derive(Debug)]
pub struct Stored {
    pub directory: Directory,
    version: Option<UpdateVersion>,
    tag: Option<String>,
}

/// What identifies one stored version of the document (e-tag, version, time and size), so a
/// reader can tell cheaply (a `HEAD`) whether it changed.
fn tag_of(meta: &object_store::ObjectMeta) -> String {
    format!(
        "{:?} {:?} {} {}",
        meta.e_tag,
        meta.version,
        meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
        meta.size
    )
}

fn io(e: object_store::Error) -> AccessError {
    AccessError::Store(format!("{ACCESS_DIR}/{DOCUMENT}: {e}"))
}

impl Stored {
    /// Reads the directory of the warehouse (the default one when it has none yet).
    pub async fn load(store: &dyn ObjectStore) -> Result<Self> {
        let path = object_store::path::Path::from(DOCUMENT);
        match store.get(&path).await {
            Ok(got) => {
                let version = UpdateVersion {
                    e_tag: got.meta.e_tag.clone(),
                    version: got.meta.version.clone(),
                };
                let tag = Some(tag_of(&got.meta));
                let bytes = got.bytes().await.map_err(io)?;
                let directory = serde_json::from_slice(&bytes).map_err(|e| {
                    AccessError::Store(format!(
                        "{ACCESS_DIR}/{DOCUMENT} is not a valid directory: {e}"
                    ))
                })?;
                Ok(Self {
                    directory,
                    version: Some(version),
                    tag,
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Self {
                directory: Directory::default(),
                version: None,
                tag: None,
            }),
            Err(e) => Err(io(e)),
        }
    }

    /// The stored version this directory was read from (`None`: there was no document).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The stored version of the document now, read with one `HEAD` (a `stat` on a local
    /// warehouse): when it equals the [`tag`](Self::tag) of a loaded directory, that directory
    /// is current.
    pub async fn current_tag(store: &dyn ObjectStore) -> Result<Option<String>> {
        let path = object_store::path::Path::from(DOCUMENT);
        match store.head(&path).await {
            Ok(meta) => Ok(Some(tag_of(&meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Writes the directory back in one put: created if it did not exist, else replaced only
    /// if unchanged since it was read (on stores that can check; the local file system
    /// replaces atomically by rename).
    pub async fn save(self, store: &dyn ObjectStore) -> Result<()> {
        let path = object_store::path::Path::from(DOCUMENT);
        let body = serde_json::to_vec_pretty(&self.directory)
            .map_err(|e| AccessError::Store(e.to_string()))?;
        let mode = match self.version {
            None => PutMode::Create,
            Some(v) => PutMode::Update(v),
        };
        let put = |mode| {
            store.put_opts(
                &path,
                PutPayload::from(body.clone()),
                PutOptions {
                    mode,
                    ..Default::default()
                },
            )
        };
        match put(mode).await {
            Ok(_) => Ok(()),
            Err(object_store::Error::NotImplemented { .. }) => {
                put(PutMode::Overwrite).await.map(|_| ()).map_err(io)
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Err(AccessError::Store(format!(
                "{ACCESS_DIR}/{DOCUMENT} changed while this command ran; run it again"
            ))),
            Err(e) => Err(io(e)),
        }
    }
}

/// The store of a warehouse's directory document, for a reader that keeps the directory
/// current (the server): [`load`](Self::load) it, then compare [`current_tag`](Self::current_tag)
/// with the loaded [`Stored::tag`] before trusting it.
#[derive(Debug, Clone)]
pub struct DirectoryStore(std::sync::Arc<dyn ObjectStore>);

impl DirectoryStore {
    /// `store`: the warehouse's access store ([`crate::store`]).
    pub fn new(store: std::sync::Arc<dyn ObjectStore>) -> Self {
        Self(store)
    }

    pub async fn load(&self) -> Result<Stored> {
        Stored::load(self.0.as_ref()).await
    }

    pub async fn current_tag(&self) -> Result<Option<String>> {
        Stored::current_tag(self.0.as_ref()).await
    }
}

/// Argon2id with the crate's recommended parameters, in PHC format.
pub fn hash_password(password: &str) -> Result<String> {
    if password.is_empty() {
        return Err(AccessError::Invalid("the password is empty".into()));
    }
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AccessError::Invalid(format!("cannot hash the password: {e}")))
}

fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AccessError::Invalid(format!(
            "bad {kind} name '{name}': use 1 to 64 letters, digits, '_', '-', '.', '@'"
        )))
    }
}

impl Directory {
    pub fn add_user(
        &mut self,
        name: &str,
        scope: Scope,
        password_hash: String,
        groups: &[String],
    ) -> Result<()> {
        check_name("user", name)?;
        if self.users.contains_key(name) {
            return Err(AccessError::Invalid(format!(
                "user '{name}' already exists"
            )));
        }
        let groups = if groups.is_empty() {
            BTreeSet::from(["analysts".to_string()])
        } else {
            groups.iter().cloned().collect()
        };
        for g in &groups {
            self.group(g)?;
        }
        self.users.insert(
            name.to_string(),
            User {
                id: new_account_id(),
                scope,
                password: password_hash,
                groups,
            },
        );
        Ok(())
    }

    /// Replaces `name`'s password (its sessions end).
    pub fn set_password(&mut self, name: &str, password_hash: String) -> Result<()> {
        self.user_mut(name)?.password = password_hash;
        Ok(())
    }

    /// Moves `name` to another scope (its sessions end).
    pub fn set_scope(&mut self, name: &str, scope: Scope) -> Result<()> {
        self.user_mut(name)?.scope = scope;
        Ok(())
    }

    pub fn remove_user(&mut self, name: &str) -> Result<User> {
        self.users
            .remove(name)
            .ok_or_else(|| AccessError::Invalid(format!("no user named '{name}'")))
    }

    fn user_mut(&mut self, name: &str) -> Result<&mut User> {
        self.users
            .get_mut(name)
            .ok_or_else(|| AccessError::Invalid(format!("no user named '{name}'")))
    }

    fn group(&self, name: &str) -> Result<&Group> {
        self.groups.get(name).ok_or_else(|| {
            AccessError::Invalid(format!(
                "no group named '{name}' (groups: {})",
                self.groups.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Makes `user` a member of `group`; true if it was not already.
    pub fn join(&mut self, user: &str, group: &str) -> Result<bool> {
        self.group(group)?;
        Ok(self.user_mut(user)?.groups.insert(group.to_string()))
    }

    /// Takes `user` out of `group`; true if it was a member.
    pub fn leave(&mut self, user: &str, group: &str) -> Result<bool> {
        Ok(self.user_mut(user)?.groups.remove(group))
    }

    /// Grants `privilege` to `group`, creating the group if it is new.
    pub fn grant(&mut self, group: &str, privilege: Privilege) -> Result<bool> {
        check_name("group", group)?;
        Ok(self
            .groups
            .entry(group.to_string())
            .or_default()
            .privileges
            .insert(privilege))
    }

    pub fn revoke(&mut self, group: &str, privilege: Privilege) -> Result<bool> {
        let g = self
            .groups
            .get_mut(group)
            .ok_or_else(|| AccessError::Invalid(format!("no group named '{group}'")))?;
        Ok(g.privileges.remove(&privilege))
    }

    /// The union of `user`'s groups' privileges.
    pub fn privileges(&self, user: &User) -> BTreeSet<Privilege> {
        user.groups
            .iter()
            .filter_map(|g| self.groups.get(g))
            .flat_map(|g| g.privileges.iter().copied())
            .collect()
    }

    /// Checks a password (argon2 verify, constant time in the hash) and the query privilege.
    pub fn authenticate(
        &self,
        name: &str,
        password: &str,
    ) -> std::result::Result<Principal, Refusal> {
        let Some(user) = self.users.get(name) else {
            // Spend the same time as for a real user, so timing does not tell who exists.
            if let Some(dummy) = dummy_hash() {
                let _ = Argon2::default().verify_password(password.as_bytes(), dummy);
            }
            return Err(Refusal::UnknownUser);
        };
        Argon2::default()
            .verify_password(password.as_bytes(), user.password.as_str())
            .map_err(|_| Refusal::WrongPassword)?;
        let principal = self.principal(name).ok_or(Refusal::UnknownUser)?;
        if !principal.may(Privilege::Query) {
            return Err(Refusal::NoQueryPrivilege);
        }
        Ok(principal)
    }

    /// The credential a session of `name` signed in now is bound to.
    pub fn credential(&self, name: &str) -> Option<Credential> {
        let user = self.users.get(name)?;
        Some(Credential {
            name: name.to_string(),
            account: user.id.clone(),
            password: user.password.clone(),
            scope: user.scope.clone(),
            groups: user.groups.clone(),
        })
    }

    /// The principal of a session bound to `credential`, if that credential is still the
    /// account's current one and it may still query; `None` ends the session.
    pub fn session_principal(&self, credential: &Credential) -> Option<Principal> {
        let current = self.credential(&credential.name)?;
        if current != *credential {
            return None;
        }
        self.principal(&credential.name)
            .filter(|p| p.may(Privilege::Query))
    }

    /// The principal `name` stands for now (no password check).
    pub fn principal(&self, name: &str) -> Option<Principal> {
        let user = self.users.get(name)?;
        Some(Principal {
            name: name.to_string(),
            scope: user.scope.clone(),
            privileges: self.privileges(user),
        })
    }
}

/// The hash of a password nobody has, verified against when the user is unknown.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password("no user has this password").ok())
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> Scope {
        s.parse().expect("scope")
    }

    #[test]
    fn a_user_signs_in_with_its_password_only_and_inherits_its_groups_privileges() {
        let mut d = Directory::default();
        let hash = hash_password("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        d.add_user("ann", scope("region:West"), hash, &[])
            .expect("add");
        let p = d.authenticate("ann", "s3cret").expect("signed in");
        assert_eq!(p.scope, scope("region:West"));
        assert_eq!(p.privileges, BTreeSet::from([Privilege::Query]));
        assert_eq!(d.authenticate("ann", "S3cret"), Err(Refusal::WrongPassword));
        assert_eq!(d.authenticate("bob", "s3cret"), Err(Refusal::UnknownUser));

        assert!(d.join("ann", "administrators").expect("join"));
        assert!(d.principal("ann").expect("ann").may(Privilege::Audit));
        assert!(d.leave("ann", "administrators").expect("leave"));
        assert!(d.leave("ann", "analysts").expect("leave"));
        assert_eq!(
            d.authenticate("ann", "s3cret"),
            Err(Refusal::NoQueryPrivilege)
        );
        assert!(d.join("ann", "nobody").is_err());
    }

    #[test]
    fn administrators_reach_the_division_and_read_the_audit_log() {
        let principal = |s: &str, privileges: &[Privilege]| Principal {
            name: "ann".into(),
            scope: scope(s),
            privileges: privileges.iter().copied().collect(),
        };
        let both = [Privilege::Query, Privilege::Audit];
        assert!(principal("division:ALL", &both).is_administrator());
        // Division analysts, and administrators' members with a narrower scope, are not.
        assert!(!principal("division:ALL", &[Privilege::Query]).is_administrator());
        assert!(!principal("region:West", &both).is_administrator());
        assert!(!principal("pharmacy:423", &both).is_administrator());
    }

    #[test]
    fn a_session_credential_ends_with_any_change_of_its_account() {
        let mut d = Directory::default();
        let h = hash_password("pw").expect("hash");
        d.add_user("ann", scope("region:West"), h.clone(), &[])
            .expect("add");
        let signed_in = d.credential("ann").expect("ann");
        assert_eq!(signed_in.account.len(), 32, "{signed_in:?}");
        assert!(d.session_principal(&signed_in).is_some());

        // Group privileges change what the session may do, not which account it is.
        d.grant("analysts", Privilege::Audit).expect("grant");
        assert!(
            d.session_principal(&signed_in)
                .expect("still ann")
                .may(Privilege::Audit)
        );

        let mut changed = d.clone();
        changed.join("ann", "administrators").expect("join");
        assert!(changed.session_principal(&signed_in).is_none(), "groups");
        let mut changed = d.clone();
        changed
            .set_scope("ann", scope("pharmacy:4"))
            .expect("scope");
        assert!(changed.session_principal(&signed_in).is_none(), "scope");
        let mut changed = d.clone();
        changed
            .set_password("ann", hash_password("pw2").expect("hash"))
            .expect("password");
        assert!(changed.session_principal(&signed_in).is_none(), "password");
        assert!(changed.set_password("bob", h.clone()).is_err());

        // Removed, then added again under the same name, scope, groups and even hash.
        let mut again = d.clone();
        again.remove_user("ann").expect("remove");
        assert!(again.session_principal(&signed_in).is_none(), "removed");
        again
            .add_user("ann", scope("region:West"), h, &[])
            .expect("add again");
        let new = again.credential("ann").expect("ann");
        assert_ne!(new.account, signed_in.account);
        assert!(again.session_principal(&signed_in).is_none(), "re-added");
        assert!(again.session_principal(&new).is_some());
    }

    #[test]
    fn a_directory_without_account_ids_still_reads() {
        let h = hash_password("pw").expect("hash");
        let doc = serde_json::json!({
            "users": {"ann": {"scope": "pharmacy:4", "password": h, "groups": ["analysts"]}},
            "groups": {"analysts": {"privileges": ["query"]}},
        });
        let d: Directory = serde_json::from_value(doc).expect("reads");
        let c = d.credential("ann").expect("ann");
        assert_eq!(c.account, "");
        assert!(d.session_principal(&c).is_some());
        assert!(d.authenticate("ann", "pw").is_ok());
    }

    #[test]
    fn names_and_duplicates_are_checked() {
        let mut d = Directory::default();
        let h = hash_password("x").expect("hash");
        assert!(
            d.add_user("a b", scope("division:ALL"), h.clone(), &[])
                .is_err()
        );
        d.add_user("a", scope("division:ALL"), h.clone(), &[])
            .expect("add");
        let err = d.add_user("a", scope("division:ALL"), h, &[]).unwrap_err();
        assert_eq!(err.to_string(), "user 'a' already exists");
        assert!(hash_password("").is_err());
    }

    #[tokio::test]
    async fn the_directory_round_trips_through_the_store_and_a_stale_save_is_refused_where_checkable()
     {
        let store = object_store::memory::InMemory::new();
        let mut first = Stored::load(&store).await.expect("load");
        assert!(first.directory.users.is_empty());
        first
            .directory
            .add_user(
                "ann",
                scope("pharmacy:4"),
                hash_password("pw").expect("h"),
                &[],
            )
            .expect("add");
        first.save(&store).await.expect("save");

        let a = Stored::load(&store).await.expect("load");
        let mut b = Stored::load(&store).await.expect("load");
        let tag = Stored::current_tag(&store).await.expect("head");
        assert!(tag.is_some());
        assert_eq!(a.tag(), tag.as_deref());
        assert_eq!(a.directory.users["ann"].scope, scope("pharmacy:4"));
        a.save(&store).await.expect("first writer wins");
        b.directory.remove_user("ann").expect("remove");
        let err = b.save(&store).await.unwrap_err().to_string();
        assert!(err.contains("changed while this command ran"), "{err}");

        let mut c = Stored::load(&store).await.expect("load");
        c.directory.remove_user("ann").expect("remove");
        c.save(&store).await.expect("save");
        let now = Stored::current_tag(&store).await.expect("head");
        assert_ne!(now, tag, "a saved change is a new version");
        assert_eq!(
            Stored::load(&store).await.expect("load").tag(),
            now.as_deref()
        );
    }
}
