/**
 * The in-memory credits proxy of the credits bench: a stand-in, written for the bench, for the
 * design of the in-memory peer (paygate-mcp): balances in a Map, node:http in and out, a priced
 * `tools/call` debited in memory and forwarded, nothing on disk before the answer (a crash loses
 * debits). The upstream at argv[2], one API key argv[3] holding argv[4] credits, argv[5] a call.
 * Prints `{"url"}`.
 */
import http from 'node:http';

const [upstreamUrl, apiKey, funds, price] = process.argv.slice(2) as [string, string, string, string];
const balances = new Map<string, number>([[apiKey, Number(funds)]]);
const cost = Number(price);
const upstream = new URL(upstreamUrl);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

const refuse = (res: http.ServerResponse, id: unknown, message: string) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', id, error: { code: -32001, message } }));
};

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    let message: { id?: unknown; method?: string };
    try {
      message = JSON.parse(body.toString('utf8')) as typeof message;
    } catch {
      return refuse(res, null, 'Parse error');
    }
    if (message.method === 'tools/call') {
      const key = req.headers.authorization?.replace(/^Bearer /, '') ?? '';
      const balance = balances.get(key);
      if (balance === undefined) return refuse(res, message.id, 'unknown API key');
      if (balance < cost) return refuse(res, message.id, 'insufficient credits');
      balances.set(key, balance - cost);
    }
    const out = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        path: upstream.pathname,
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json' },
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, { 'content-type': answer.headers['content-type'] ?? 'application/json' });
        answer.pipe(res);
      },
    );
    out.on('error', () => refuse(res, message.id, 'upstream unreachable'));
    out.end(body);
  });
});
server.keepAliveTimeout = 30_000;
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as { port: number };
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${port}/mcp` })}\n`);
});
// A clean exit on the bench's SIGTERM, so a --cpu-prof of this process gets written.
process.on('SIGTERM', () => process.exit(0));
