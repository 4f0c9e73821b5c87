//! The executor that runs the adapter's background tasks.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tether_driver::Task;

/// Runs the adapter's background tasks (the client's driver and transports, the server's hub
/// and connections). Tasks end on their own; none is ever awaited or cancelled through the
/// executor, so any executor that runs `Send` futures to completion will do.
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(Task) + Send + Sync>);

impl Spawner {
    /// Spawns with `spawn`, e.g. `Spawner::new(|task| smol::spawn(task).detach())`.
    pub fn new(spawn: impl Fn(Task) + Send + Sync + 'static) -> Spawner {
        Spawner(Arc::new(spawn))
    }

    /// async-std's executor (the default).
    pub fn async_std() -> Spawner {
        Spawner::new(|task| {
            async_std::task::spawn(task);
        })
    }

    /// Runs `task` in the background.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(task));
    }
}

impl Default for Spawner {
    fn default() -> Spawner {
        Spawner::async_std()
    }
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spawner")
    }
}
