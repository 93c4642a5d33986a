/**
 * Listens for SIGINT and SIGTERM from the moment it is called; `wait()` resolves on the first one,
 * even one that came before it was called. Long-running commands call it before they start
 * anything and await `wait()` once they serve, then shut down what they own, so Ctrl-C leaves no
 * child process behind, and a signal sent while they start (a PID 1 in a container drops the
 * signals it has no handler for) is kept, not lost.
 *
 * @example
 * const signals = listenForSignals();
 * const server = await serve();
 * await signals.wait();
 * await server.close();
 */
export function listenForSignals(): { wait(): Promise<NodeJS.Signals> } {
  let resolve!: (signal: NodeJS.Signals) => void;
  const received = new Promise<NodeJS.Signals>((r) => (resolve = r));
  const onSignal = (signal: NodeJS.Signals) => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    resolve(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    async wait() {
      // Signal listeners do not keep the event loop alive; this timer does, until a signal comes.
      const keepAlive = setInterval(() => {}, 1 << 30);
      try {
        return await received;
      } finally {
        clearInterval(keepAlive);
      }
    },
  };
}
