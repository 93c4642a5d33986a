import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Listening } from '../../src/http/listen.js';
import { createMetrics } from '../../src/http/metrics.js';
import { flatPlan } from '../../src/pricing/plans.js';
import { priceTableSchema } from '../../src/pricing/pricing.js';
import { type ToolsSource, toolsLookups } from '../../src/upstream/upstream-tools.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { listenGateway, postToolCall } from '../helpers/gateway.js';

const PAY_TO = '0x000000000000000000000000000000000000dEaD';

describe('metric labels are the operators’ names, never a caller’s', () => {
  let counter: Awaited<ReturnType<typeof startCounterUpstream>>;
  let gateway: Listening;
  let tools: ToolsSource;
  const metrics = createMetrics();

  before(async () => {
    counter = await startCounterUpstream();
    const upstream = { url: `${counter.url}/mcp`, headers: {}, timeoutMs: 10_000 };
    const plan = flatPlan(priceTableSchema.parse({ default: '0', tools: { fail: '0.01' } }));
    tools = toolsLookups().of(upstream);
    gateway = await listenGateway({ upstream, plan, payTo: PAY_TO, rails: [], server: 'free', metrics, tools });
  });
  after(async () => {
    await gateway?.close();
    await counter?.close();
  });

  test('a caller calling a thousand made-up tools of a free server leaves the real tools’ labels, and adds none of its names', async () => {
    for (let batch = 0; batch < 20; batch++) {
      const calls = Array.from({ length: 50 }, (_, i) => postToolCall(`${gateway.url}/mcp`, `made-up-${batch}-${i}`).then((r) => r.text()));
      await Promise.all(calls);
    }
    // The upstream's list, as discovery (or the lookup the first call started) has it by now.
    await tools();
    const res = await postToolCall(`${gateway.url}/mcp`, 'count');
    assert.equal(res.status, 200);
    await res.text();
    const text = (await metrics.registry.metrics())
      .split('\n')
      .filter((line) => line.startsWith('turnpike_tool_calls_total'))
      .join('\n');
    assert.match(text, /turnpike_tool_calls_total\{server="free",tool="count",outcome="free"\} 1$/m);
    assert.doesNotMatch(text, /made-up-/);
    assert.match(text, /turnpike_tool_calls_total\{server="free",tool="unlisted",outcome="free"\} 1000$/m);
  });
});
