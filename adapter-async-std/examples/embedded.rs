//! A server embedded in an application, on smol (or async-std: see `--async-std`), with a
//! subscriber that unsubscribes, a publisher that does not want its own messages back, and
//! a watch on the connection state.
//!
//! ```sh
//! cargo run -p tether-async-std --example embedded            # on smol
//! cargo run -p tether-async-std --example embedded -- --async-std
//! ```

use futures_lite::StreamExt;
use tether_async_std::{
    ApiKey, Capabilities, ChannelEvent, Client, ClientOptions, HubConfig, Server, ServerConfig,
    Spawner,
};

async fn run(spawner: Spawner) -> Result<(), Box<dyn std::error::Error>> {
    let mut hub = HubConfig::default();
    hub.keys = vec![ApiKey {
        name: "app".into(),
        secret: "app-secret".into(),
        capabilities: Capabilities::all(),
    }];
    let mut config = ServerConfig::new(hub);
    config.transport.spawner = spawner.clone();
    let server = Server::bind("127.0.0.1:0", config).await?;
    let url = format!("ws://{}/", server.local_addr());
    let options = || {
        let mut options = ClientOptions::api_key("app", "app-secret");
        options.transport.spawner = spawner.clone();
        options
    };

    let reader = Client::connect(&url, options())?;
    let mut states = reader.state_changes();
    let mut events = reader.channel("sensors")?.subscribe().await?;

    // The publisher also follows the channel, but asked not to get its own messages.
    let mut quiet = options();
    quiet.config.echo = false;
    let writer = Client::connect(&url, quiet)?;
    let sensors = writer.channel("sensors")?;
    let mut own = sensors.subscribe().await?;
    for reading in ["21.5", "21.7", "21.6"] {
        sensors.publish("temperature", reading).await?;
    }
    let mut received = 0;
    while received < 3 {
        if let Some(ChannelEvent::Message(message)) = events.next().await {
            received += 1;
            println!(
                "reader got {} = {}",
                message.message.name,
                String::from_utf8_lossy(&message.message.data)
            );
        }
    }
    // The writer's own subscription got none of its own messages (each came as a position
    // only, so its continuity holds).
    let mut echoed = 0;
    while let Some(Some(event)) = futures_lite::future::poll_once(own.next()).await {
        if matches!(event, ChannelEvent::Message(_)) {
            echoed += 1;
        }
    }
    println!("the writer's own subscription got {echoed} of its own 3 messages");

    events.unsubscribe().await; // the last subscription of the channel: detached
    reader.close().await;
    while let Some(change) = states.next().await {
        println!("reader: {} -> {}", change.previous, change.current);
    }
    writer.close().await;
    server.shutdown().await;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|arg| arg == "--async-std") {
        async_std::task::block_on(run(Spawner::async_std()))
    } else {
        smol::block_on(run(Spawner::new(|task| smol::spawn(task).detach())))
    }
}
