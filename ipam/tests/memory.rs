//! IPAM scenarios over the in-memory datastore fake (fast, no etcd).

mod common;

use std::sync::Arc;

use trellis_datastore::memory::MemoryDatastore;
use trellis_datastore::Datastore;

async fn fresh(_name: &str) -> Arc<dyn Datastore> {
    Arc::new(MemoryDatastore::new())
}

scenario_tests!(fresh);
