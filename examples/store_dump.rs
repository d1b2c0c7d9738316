//! Prints the messages of a raw `msg_stores` directory (the directory
//! holding it given) as `messages` prints a snapshot's: a development aid.
//!
//! ```text
//! cargo run --example store_dump -- tests/fixtures/store/4.3.6
//! ```

use rabbitmq_backup::commands::messages::line;
use rabbitmq_backup::store::Store;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: store_dump DIR");
    let store = Store::open(std::path::Path::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
    for note in &store.notes {
        eprintln!("note: {note}");
    }
    let work = tempfile::tempdir().unwrap();
    for vhost in store.vhosts() {
        let reader = store
            .vhost(&vhost.name, work.path())
            .unwrap_or_else(|e| panic!("{e}"));
        for queue in &vhost.queues {
            let mut messages = reader.queue(queue);
            for item in messages.by_ref() {
                let item = item.unwrap_or_else(|e| panic!("{e}"));
                println!("{}", line(queue, &item, true));
            }
            eprintln!("{} {}: {:?}", queue.vhost, queue.name, messages.summary());
        }
    }
}
