//! sqllogictest suites run as scoped users over the tiny fixture chain
//! (`../rxcube-cube/tests/fixtures/tiny`, whose answers are worked out by hand in its README).
//!
//! `tests/slt/<level>__<node>.slt` runs in the session of a user with scope `level:node`: what
//! it may read, what it may not, and that what it reads is exactly the hand-worked figures of
//! its part of the chain (peer averages and ranks still over every pharmacy). Each suite runs
//! on the raw path and from rollups.
//!
//! `tests/slt/<fixture>/<level>__<node>.slt` runs the same way over the chain
//! `tests/fixtures/<fixture>` (its README works out the answers): `small_cells` for small-cell
//! protection.

#[path = "../../rxcube-cube/tests/support/slt_support.rs"]
mod slt_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use rxcube_access::{Principal, Privilege, Scope, Snapshot};
use sqllogictest::{DBOutput, DefaultColumnType};

struct Db {
    ctx: SessionContext,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let (batches, _) = rxcube_cube::run_statement(&self.ctx, sql).await?;
        slt_support::output(&batches)
    }

    async fn shutdown(&mut self) {}
}

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rxcube-cube/tests/fixtures/tiny")
}

async fn run(suite: &str, rollups: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fixture, name) = match suite.rsplit_once('/') {
        Some((fixture, name)) => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{fixture}")),
            name,
        ),
        None => (tiny(), suite),
    };
    let warehouse = slt_support::land(&fixture, &dir.path().join("w")).await;
    if rollups {
        rxcube_cube::rollup::run(
            &warehouse,
            std::sync::Arc::new(rxcube_cube::CubeDef::built_in()),
            rxcube_cube::rollup::Mode::Build,
            &mut |_, _| {},
        )
        .await
        .expect("rollups build");
    }
    let snapshot = Snapshot::load(&warehouse).await.expect("snapshot");
    let (level, node) = name.split_once("__").expect("suite named level__node");
    let scope: Scope = format!("{level}:{node}").parse().expect("scope");
    snapshot.org.check(&scope).expect("scope in the fixture");
    let principal = Principal {
        name: format!("{level}_user"),
        scope,
        privileges: BTreeSet::from([Privilege::Query]),
    };
    let ctx = snapshot
        .user_session(&principal)
        .await
        .expect("user session");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/slt/{suite}.slt"));
    let mut runner = sqllogictest::Runner::new(move || {
        let ctx = ctx.clone();
        async move { Ok(Db { ctx }) }
    });
    runner
        .run_file_async(&path)
        .await
        .unwrap_or_else(|e| panic!("{suite} (rollups: {rollups}): {e}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pharmacy_manager_sees_its_pharmacy_with_peer_figures_and_nothing_else() {
    run("pharmacy__1", false).await;
    run("pharmacy__1", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_area_manager_sees_what_rolled_up_into_its_area_as_was() {
    run("local_area__LA1", false).await;
    run("local_area__LA1", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_area_a_pharmacy_moved_into_sees_it_from_the_move_on() {
    run("local_area__LA2", false).await;
    run("local_area__LA2", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pharmacy_manager_gets_no_figure_of_a_small_cell() {
    run("small_cells/pharmacy__1", false).await;
    run("small_cells/pharmacy__1", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_area_manager_sees_every_cell_of_the_small_cells_chain() {
    run("small_cells/local_area__LA1", false).await;
    run("small_cells/local_area__LA1", true).await;
}
