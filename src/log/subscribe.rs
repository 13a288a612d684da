//! Catch-up subscriptions that turn live without a gap or a repeat.
//!
//! A subscriber is driven by positions, not by messages: it reads committed events from its
//! next position while the head is ahead of it, and waits on the head otherwise. The head is
//! published only after a commit is durable, so whatever it announces is readable.

use std::collections::VecDeque;

use tokio::sync::watch;

use super::envelope::Event;
use super::{Head, Ledger, LogError};

const READ_AHEAD: usize = 512;

pub struct Subscription {
    ledger: Ledger,
    next: u64,
    buf: VecDeque<Event>,
    head: watch::Receiver<Head>,
}

impl Subscription {
    pub(super) fn new(ledger: Ledger, from: u64) -> Subscription {
        let head = ledger.head_watch();
        Subscription {
            ledger,
            next: from,
            buf: VecDeque::new(),
            head,
        }
    }

    /// The position of the next event this subscription will yield.
    pub fn position(&self) -> u64 {
        self.buf.front().map_or(self.next, Event::position)
    }

    /// The next event, waiting for one to be committed if the subscriber is caught up.
    pub async fn next(&mut self) -> Result<Event, LogError> {
        loop {
            if let Some(e) = self.buf.pop_front() {
                return Ok(e);
            }
            let size = self.head.borrow_and_update().size;
            if self.next < size {
                let events = self.ledger.read_all(self.next, READ_AHEAD)?;
                if let Some(last) = events.last() {
                    self.next = last.position() + 1;
                }
                self.buf.extend(events);
                continue;
            }
            self.head.changed().await.map_err(|_| LogError::Stopped)?;
        }
    }
}
