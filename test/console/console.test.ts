import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired } from '@x402/core/types';
import { ExactEvmScheme } from '@x402/evm/exact/client';
import { type Browser, type Page, chromium } from 'playwright-core';
import { useSandbox } from '../helpers/chain.js';
import { startCounterUpstream } from '../helpers/counter-upstream.js';
import { serveOnSandbox } from '../helpers/served.js';

/** Debian's chromium (`.ci/run` installs it), or another Chromium named by TURNPIKE_CHROMIUM. */
const CHROMIUM = process.env.TURNPIKE_CHROMIUM ?? '/usr/bin/chromium';
/** The README shows what this test saw. */
// Screenshots go to a scratch directory, so a test run leaves the checkout as it was;
// `TURNPIKE_SCREENSHOTS=docs npm test` refreshes the README's.
const SCREENSHOTS = process.env.TURNPIKE_SCREENSHOTS
  ? path.resolve(process.env.TURNPIKE_SCREENSHOTS)
  : mkdtempSync(path.join(os.tmpdir(), 'turnpike-console-'));
const ADMIN = 'admin-key-for-the-console-browser-test-0123';

const chain = useSandbox({ isolate: false });
let served: Awaited<ReturnType<typeof serveOnSandbox>>;
let upstream: Awaited<ReturnType<typeof startCounterUpstream>>;
let browser: Browser;
let page: Page;
let operatorKey: string;
/** Uncaught errors of the console's script and refusals by its content security policy: there must be none. */
const pageErrors: string[] = [];

/** What the test reads of a page's globals (the test is type-checked without the DOM library). */
type Page$ = { document: { cookie: string; documentElement: { scrollWidth: number } }; indexedDB: { databases(): Promise<unknown[]> } };

/** Reloads the page until `check` passes (for up to 30 s: a reload is slow on a loaded machine): what the page shows comes from the API on each load. */
async function reloadUntil(check: () => Promise<boolean>, what: string) {
  const deadline = Date.now() + 30_000;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what} did not show`);
    await new Promise((r) => setTimeout(r, 200));
    await page.reload();
    await page.waitForSelector('main h1');
  }
}

const noChromium = existsSync(CHROMIUM)
  ? undefined
  : `no Chromium at ${CHROMIUM}: bash scripts/ensure-chromium.sh (as .ci/run does), or set TURNPIKE_CHROMIUM`;
// CI must run the browser test: there a missing Chromium fails the run instead of skipping it (as PostgreSQL does).
if (noChromium && process.env.CI) throw new Error(noChromium);

describe('the console in a real browser (Debian chromium driven by playwright-core)', { skip: noChromium }, () => {
  before(async () => {
    upstream = await startCounterUpstream();
    served = await serveOnSandbox(chain, {
      overrides: { operators: { allowPrivateUpstreams: true, minWithdrawalUsd: '0.001' } },
      secrets: { adminKey: ADMIN },
    });
    const payoutAddress = chain.sandbox.accounts.payees[1]!.address;
    const body = { email: 'erin@example.com', name: 'Erin', payoutAddress };
    const created = await served.api('POST', '/admin/operators', { key: ADMIN, body });
    operatorKey = created.body.key;
    browser = await chromium.launch({ executablePath: CHROMIUM });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(10_000);
    page.on('pageerror', (error) => pageErrors.push(error.message));
    // A content-security-policy refusal is logged as a console error; an API's 401 (signed out) is expected.
    page.on('console', (message) => {
      if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) pageErrors.push(message.text());
    });
    mkdirSync(SCREENSHOTS, { recursive: true });
  });
  after(async () => {
    assert.deepEqual(pageErrors, [], 'the console script threw');
    await browser?.close();
    await served?.gateway.close();
    await upstream?.close();
  });

  test('an operator signs in, registers a server, sees a paid call charted, withdraws it; no storage holds the key', async (t) => {
    await page.goto(`${served.url}/console`);
    await page.getByLabel('Operator key (op_…) or admin key').fill(operatorKey);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Servers' }).waitFor();

    // Register a server through the form, keyboard only for the custody choice.
    await page.getByLabel('Slug (served at /mcp/<slug>)').fill('counter');
    await page.getByLabel('Name', { exact: true }).fill('Counter');
    await page.getByLabel('Upstream MCP URL').fill(`${upstream.url}/mcp`);
    await page.getByLabel('Custody', { exact: true }).focus();
    await page.getByLabel('Custody', { exact: true }).selectOption('platform');
    await page.getByRole('button', { name: 'Register' }).click();
    const mcpUrl = await page.locator('code.mcp-url').first().textContent();
    assert.equal(mcpUrl, `${served.url}/mcp/counter`);
    await page.getByText('Caller snippet').click();
    assert.match((await page.locator('details pre').textContent()) ?? '', /callTool\(call\)[\s\S]*Bearer tp_YOUR_KEY/);
    const row = page.locator('table', { hasText: 'Your MCP servers' }).locator('tbody tr').first();
    await row.getByRole('link', { name: 'Edit' }).click();
    await page.getByRole('heading', { name: 'Edit counter' }).waitFor();
    await page.getByLabel('Name', { exact: true }).fill('Counter (edited)');
    await page.getByRole('button', { name: 'Save changes' }).click();
    await row.getByText('Counter (edited)').waitFor();
    await row.getByRole('button', { name: 'Suspend' }).click();
    await row.locator('td.state-suspended').waitFor();
    assert.equal((await fetch(mcpUrl!, { method: 'POST' })).status, 404, 'a suspended server is not served');
    await row.getByRole('button', { name: 'Resume' }).click();
    await row.locator('td.state-active').waitFor();
    await page.getByText('Caller snippet').click();
    await page.screenshot({ path: path.join(SCREENSHOTS, 'console-servers.png'), fullPage: true });

    // A paid call through it with the official MCP SDK client and x402 client.
    const client = new Client({ name: 'console-test-agent', version: '1.0.0' });
    await client.connect(new StreamableHTTPClientTransport(new URL(mcpUrl!)));
    const challenge = await client.callTool({ name: 'count', arguments: {} });
    const required = challenge.structuredContent as PaymentRequired;
    const wallet = new ExactEvmScheme(chain.sandbox.accounts.payers[4]!);
    const payment = await new x402Client().register('eip155:8453', wallet).createPaymentPayload(required);
    const paid = await client.callTool({ name: 'count', arguments: {}, _meta: { 'x402/payment': payment } });
    await client.close();
    assert.equal((paid._meta?.['x402/payment-response'] as { success: boolean }).success, true);

    // In the chart (drawn from the day's figures) and the tables, once the charge is earned.
    await page.getByRole('link', { name: 'Revenue and usage' }).click();
    await page.getByRole('heading', { name: 'Revenue and usage' }).waitFor();
    const revenueFigure = page.locator('figure[data-revenue]');
    await reloadUntil(async () => (await revenueFigure.getAttribute('data-revenue')) === '0.01', 'the paid call’s revenue');
    assert.equal(await page.locator('figure[data-paid-calls]').getAttribute('data-paid-calls'), '1');
    assert.equal(await page.locator('figure.chart canvas').count(), 2, 'uPlot drew both charts');
    const toolRow = page.locator('table', { hasText: 'Usage by tool' }).locator('tbody tr');
    assert.deepEqual(await toolRow.first().locator('td').allTextContents(), ['count', '1', '1', '0.01', '0.01']);
    assert.match((await page.locator('table', { hasText: 'Usage by rail' }).locator('tbody').textContent()) ?? '', /x402/);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'console-usage.png'), fullPage: true });
    // How long a load of the dashboard takes to show its charts (reported, not judged: the machine may be busy).
    await page.reload();
    await page.locator('figure.chart canvas').nth(1).waitFor();
    const [shown, paint] = await page.evaluate(() => [
      performance.now(),
      performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
    ]);
    t.diagnostic(`usage dashboard: first paint ${paint?.toFixed(0)} ms, charts drawn by ${shown.toFixed(0)} ms after navigation started`);

    // A withdrawal of everything available, followed to `confirmed` with its transaction hash.
    await page.getByRole('link', { name: 'Money' }).click();
    await page.getByRole('heading', { name: 'Withdraw USDC' }).waitFor();
    assert.equal(await page.locator('[data-balance="USDC available"]').textContent(), '0.01');
    await page.getByRole('button', { name: 'Withdraw' }).click();
    const withdrawal = page.locator('table', { hasText: 'USDC withdrawals' }).locator('tbody tr').first();
    await withdrawal.locator('td.state-confirmed').waitFor({ timeout: 30_000 });
    assert.match((await withdrawal.locator('td.tx-hash').textContent()) ?? '', /^0x[0-9a-f]{64}$/);
    assert.equal(await page.locator('[data-balance="USDC withdrawn"]').textContent(), '0.01');
    await page.screenshot({ path: path.join(SCREENSHOTS, 'console-money.png'), fullPage: true });

    // The key is nowhere a script could read it: not in storage, not in a script-readable cookie.
    const storage = await page.evaluate(async () => {
      const w = globalThis as unknown as Page$ & { localStorage: object; sessionStorage: object };
      return {
        local: JSON.stringify({ ...w.localStorage }),
        session: JSON.stringify({ ...w.sessionStorage }),
        cookies: w.document.cookie,
        databases: (await w.indexedDB.databases()).length,
      };
    });
    assert.deepEqual(storage, { local: '{}', session: '{}', cookies: '', databases: 0 });
    const cookies = await page.context().cookies();
    assert.deepEqual(
      cookies.map((c) => [c.name, c.httpOnly, c.sameSite]),
      [['turnpike_console', true, 'Strict']],
    );
    assert.ok(!cookies[0]!.value.includes(operatorKey));
    assert.ok(!(await page.content()).includes(operatorKey), 'nor in the page');

    // Signing out ends the session: the API answers 401 to the cookie-less page.
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByText('Signed out.').waitFor();
    assert.deepEqual(await page.context().cookies(), []);
  });

  test('the admin view lists operators and instance analytics, and reads on a phone-sized screen', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByLabel('Operator key (op_…) or admin key').fill(ADMIN);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Operators' }).waitFor();
    const row = page.locator('table', { hasText: 'Operators on this instance' }).locator('tbody tr').first();
    assert.match((await row.textContent()) ?? '', /Erin.*erin@example\.com/);
    await row.getByRole('button', { name: 'Suspend' }).click();
    await row.locator('td.state-suspended').waitFor();
    await row.getByRole('button', { name: 'Resume' }).click();
    await row.locator('td.state-active').waitFor();
    await page.getByRole('link', { name: 'Analytics' }).click();
    await page.getByRole('heading', { name: 'Usage and revenue (instance)' }).waitFor();
    assert.equal(await page.locator('figure[data-paid-calls]').getAttribute('data-paid-calls'), '1');
    const width = await page.evaluate(() => (globalThis as unknown as Page$).document.documentElement.scrollWidth);
    assert.ok(width <= 390, `the page fits a phone's width (scrollWidth ${width})`);
    await page.screenshot({ path: path.join(SCREENSHOTS, 'console-admin-phone.png'), fullPage: true });
  });
});
