//! `rxcube users`: the users and groups of a warehouse, and what they may see.

use std::io::BufRead;
use std::process::ExitCode;

use rxcube_access::{Directory, Privilege, Scope};

use crate::WarehouseArg;

#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
A user signs in to `rxcube serve` with a name and password (stored as an argon2id hash) and sees \
the warehouse through its org scope, LEVEL:NODE: pharmacy:<pharmacy_id>, local_area:<name>, \
service_area:<name>, region:<name> or division:ALL. Every relation is filtered to the scope \
inside the plan: rows of pharmacies and org nodes outside it never leave the engine, while peer \
averages, ranks and pacesetters stay as computed over everyone. Employees' SSN, hourly rate and \
pay are masked for users at the pharmacy level. Rollups and system tables are for division \
users; the audit log (system.audit_log) for members of a group with the audit privilege.

A user's privileges are its groups' privileges: `query` (sign in and query) and `audit` (read \
the audit log). Built-in groups: analysts (query), administrators (query, audit).

Examples:
  echo 's3cret' | rxcube users add ann --scope region:West --password-stdin
  rxcube users grant ann --group administrators
  rxcube users grant --group auditors --privilege audit
  rxcube users list
  rxcube users remove ann")]
pub struct UsersArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Add a user with a password, an org scope and groups (default: analysts).
    Add {
        name: String,
        /// The org scope, LEVEL:NODE (e.g. region:West, pharmacy:4, division:ALL).
        #[arg(long)]
        scope: String,
        /// A group to join (repeatable). Default: analysts.
        #[arg(long = "group", short = 'g')]
        groups: Vec<String>,
        /// Read the password from the first line of stdin (else: prompted on the terminal).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
    /// Remove a user (its sessions end at the server's next reload).
    Remove {
        name: String,
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
    /// List users (scope, groups, privileges) and groups.
    List {
        #[command(flatten)]
        warehouse: WarehouseArg,
    },
    /// Add USER to --group, or grant --privilege to --group (creating the group).
    Grant(Change),
    /// Take USER out of --group, or revoke --privilege from --group.
    Revoke(Change),
}

#[derive(Debug, clap::Args)]
struct Change {
    /// The user to add to (or remove from) --group.
    #[arg(required_unless_present = "privilege", conflicts_with = "privilege")]
    user: Option<String>,
    #[arg(long, short = 'g')]
    group: String,
    /// query or audit.
    #[arg(long)]
    privilege: Option<String>,
    #[command(flatten)]
    warehouse: WarehouseArg,
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let mut line = String::new();
    if !from_stdin {
        eprint!("password: ");
    }
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(!password.is_empty(), "no password given (on stdin)");
    Ok(password)
}

/// The org of `warehouse`, which scopes are checked against.
async fn org(warehouse: &rxcube_warehouse::Warehouse) -> anyhow::Result<rxcube_access::OrgIndex> {
    let def = rxcube_cube::definition_for(warehouse)?;
    let default_timezone = def.time.default_timezone.clone();
    let ctx = rxcube_cube::session(warehouse, def).await?;
    Ok(rxcube_access::OrgIndex::load(&ctx, &default_timezone).await?)
}

/// Adds a user to the directory of `warehouse` after checking its scope against the org.
async fn add(
    warehouse: &rxcube_warehouse::Warehouse,
    org: &rxcube_access::OrgIndex,
    name: &str,
    scope: &str,
    groups: &[String],
    password: &str,
) -> anyhow::Result<()> {
    let scope: Scope = scope.parse()?;
    org.check(&scope)?;
    let hash = rxcube_access::directory::hash_password(password)?;
    rxcube_access::change_directory(warehouse, |d| d.add_user(name, scope, hash, groups)).await?;
    Ok(())
}

pub async fn run(args: UsersArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Add {
            name,
            scope,
            groups,
            password_stdin,
            warehouse,
        } => {
            let warehouse = warehouse.open().await?;
            let password = read_password(password_stdin)?;
            add(
                &warehouse,
                &org(&warehouse).await?,
                &name,
                &scope,
                &groups,
                &password,
            )
            .await?;
            println!("added user {name} ({scope})");
        }
        Action::Remove { name, warehouse } => {
            let warehouse = warehouse.open().await?;
            rxcube_access::change_directory(&warehouse, |d| d.remove_user(&name)).await?;
            println!("removed user {name}");
        }
        Action::List { warehouse } => {
            let warehouse = warehouse.open().await?;
            let d = rxcube_access::load_directory(&warehouse).await?.directory;
            print!("{}", listing(&d));
        }
        Action::Grant(c) => change(c, true).await?,
        Action::Revoke(c) => change(c, false).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn change(c: Change, grant: bool) -> anyhow::Result<()> {
    let warehouse = c.warehouse.open().await?;
    let group = c.group.clone();
    let message = match (&c.user, &c.privilege) {
        (Some(user), _) => {
            let changed = rxcube_access::change_directory(&warehouse, |d| {
                if grant {
                    d.join(user, &group)
                } else {
                    d.leave(user, &group)
                }
            })
            .await?;
            match (grant, changed) {
                (true, true) => format!("{user} joined {group}"),
                (true, false) => format!("{user} was already in {group}"),
                (false, true) => format!("{user} left {group}"),
                (false, false) => format!("{user} was not in {group}"),
            }
        }
        (None, Some(p)) => {
            let p: Privilege = p.parse()?;
            let changed = rxcube_access::change_directory(&warehouse, |d| {
                if grant {
                    d.grant(&group, p)
                } else {
                    d.revoke(&group, p)
                }
            })
            .await?;
            match (grant, changed) {
                (true, true) => format!("group {group} may now {p}"),
                (true, false) => format!("group {group} already may {p}"),
                (false, true) => format!("group {group} may no longer {p}"),
                (false, false) => format!("group {group} did not have {p}"),
            }
        }
        (None, None) => anyhow::bail!("name a user, or give --privilege"),
    };
    println!("{message}");
    Ok(())
}

fn listing(d: &Directory) -> String {
    let mut out = String::from("user\tscope\tgroups\tprivileges\n");
    for (name, u) in &d.users {
        let groups: Vec<&str> = u.groups.iter().map(String::as_str).collect();
        let privileges: Vec<&str> = d.privileges(u).into_iter().map(Privilege::as_str).collect();
        out.push_str(&format!(
            "{name}\t{}\t{}\t{}\n",
            u.scope,
            groups.join(","),
            privileges.join(",")
        ));
    }
    out.push_str("\ngroup\tprivileges\n");
    for (name, g) in &d.groups {
        let privileges: Vec<&str> = g.privileges.iter().map(|p| p.as_str()).collect();
        out.push_str(&format!("{name}\t{}\n", privileges.join(",")));
    }
    out
}

/// The demo users `rxcube demo` creates (password `demo`), one per org level.
pub const DEMO_USERS: [(&str, &str, &str); 6] = [
    ("admin", "division:ALL", "administrators"),
    ("dana", "division:ALL", "analysts"),
    ("rita", "region:West", "analysts"),
    ("sam", "service_area:Rockies", "analysts"),
    ("lena", "local_area:Chicago", "analysts"),
    ("pat", "pharmacy:423", "analysts"),
];

/// Creates the demo users that do not exist yet.
pub async fn add_demo_users(
    warehouse: &rxcube_warehouse::Warehouse,
) -> anyhow::Result<Vec<&'static str>> {
    let existing = rxcube_access::load_directory(warehouse).await?.directory;
    let mut added = Vec::new();
    let org = org(warehouse).await?;
    for (name, scope, group) in DEMO_USERS {
        if !existing.users.contains_key(name) {
            add(warehouse, &org, name, scope, &[group.to_string()], "demo").await?;
            added.push(name);
        }
    }
    Ok(added)
}
