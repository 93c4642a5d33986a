import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { UpstreamUrlError, checkUpstreamUrl, guardedAgent, isForbiddenAddress } from '../../src/upstream/ssrf.js';

describe('isForbiddenAddress', () => {
  const forbidden: [string, string][] = [
    ['0.0.0.0', 'an unspecified'],
    ['0.255.255.255', 'an unspecified'],
    ['10.0.0.5', 'a private'],
    ['10.255.255.255', 'a private'],
    ['100.64.0.1', 'a carrier-grade NAT'],
    ['100.127.255.255', 'a carrier-grade NAT'],
    ['127.0.0.1', 'a loopback'],
    ['127.8.9.10', 'a loopback'],
    ['169.254.169.254', 'a link-local (cloud metadata)'],
    ['169.254.0.1', 'a link-local (cloud metadata)'],
    ['172.16.0.1', 'a private'],
    ['172.31.255.255', 'a private'],
    ['192.0.0.8', 'an IETF protocol'],
    ['192.168.1.1', 'a private'],
    ['198.18.0.1', 'a benchmarking'],
    ['198.19.255.255', 'a benchmarking'],
    ['224.0.0.1', 'a multicast'],
    ['239.255.255.250', 'a multicast'],
    ['240.0.0.1', 'a reserved or broadcast'],
    ['255.255.255.255', 'a reserved or broadcast'],
    ['::', 'an unspecified'],
    ['::1', 'a loopback'],
    ['0:0:0:0:0:0:0:1', 'a loopback'],
    ['fc00::1', 'a private'],
    ['fd00:ec2::254', 'a private'],
    ['fe80::1', 'a link-local'],
    ['fe80::1%eth0', 'a link-local'],
    ['febf:ffff::1', 'a link-local'],
    ['ff02::1', 'a multicast'],
    // IPv4-mapped, in each spelling: judged as the IPv4 address.
    ['::ffff:127.0.0.1', 'a loopback'],
    ['::ffff:7f00:1', 'a loopback'],
    ['0:0:0:0:0:ffff:a00:5', 'a private'],
    ['::FFFF:169.254.169.254', 'a link-local (cloud metadata)'],
    // NAT64: judged as the embedded IPv4 address.
    ['64:ff9b::10.0.0.1', 'a private'],
    ['64:ff9b::a9fe:a9fe', 'a link-local (cloud metadata)'],
    ['64:ff9b::7f00:1', 'a loopback'],
    ['64:ff9b:1::8.8.8.8', 'a local-use NAT64'],
    ['not-an-ip', 'an unparseable'],
  ];
  for (const [ip, why] of forbidden) test(`${ip} is ${why}`, () => assert.equal(isForbiddenAddress(ip), why));

  // The neighbours just outside each range, and ordinary public addresses, are allowed.
  const allowed = [
    '1.0.0.1',
    '8.8.8.8',
    '9.255.255.255',
    '11.0.0.0',
    '100.63.255.255',
    '100.128.0.0',
    '126.255.255.255',
    '128.0.0.0',
    '169.253.255.255',
    '169.255.0.0',
    '172.15.255.255',
    '172.32.0.0',
    '192.0.1.0',
    '192.167.255.255',
    '192.169.0.0',
    '198.17.255.255',
    '198.20.0.0',
    '223.255.255.255',
    '2606:4700::1111',
    '2001:4860:4860::8888',
    'fbff:ffff::1',
    '::2:0:0:1',
    '::ffff:8.8.8.8',
    '::ffff:808:808',
    '64:ff9b::8.8.8.8',
    '64:ff9b::101:101',
  ];
  for (const ip of allowed) test(`${ip} is public`, () => assert.equal(isForbiddenAddress(ip), undefined));

  const judged = (cases: [string, string | undefined][]) => {
    for (const [ip, why] of cases) assert.equal(isForbiddenAddress(ip), why, ip);
  };

  test('refuses a 6to4 address that carries 127.0.0.1', () => {
    judged([
      ['2002:7f00:1::', 'a loopback'],
      ['2002:7f00:1:ab::1', 'a loopback'],
    ]);
  });

  test('refuses a 6to4 address that carries 169.254.169.254', () => {
    judged([['2002:a9fe:a9fe::', 'a link-local (cloud metadata)']]);
  });

  test('refuses a 6to4 address that carries a private, carrier-grade NAT or documentation IPv4 address', () => {
    judged([
      ['2002:a00:1::', 'a private'],
      ['2002:c0a8:101::1', 'a private'],
      ['2002:6440:1::', 'a carrier-grade NAT'],
      ['2002:c000:201::', 'a documentation'],
    ]);
  });

  test('allows a 6to4 address that carries a public IPv4 address', () => {
    judged([
      ['2002:0808:0808::', undefined],
      ['2002:101:101:1::1', undefined],
    ]);
  });

  test('refuses an IPv4-translated address that carries 10.0.0.1, in either spelling', () => {
    judged([
      ['::ffff:0:a00:1', 'a private'],
      ['::ffff:0:10.0.0.1', 'a private'],
      ['::ffff:0:7f00:1', 'a loopback'],
    ]);
  });

  test('allows an IPv4-translated address that carries a public IPv4 address', () => {
    judged([['::ffff:0:808:808', undefined]]);
  });

  test('refuses a Teredo address whose client, the last 32 bits inverted, is forbidden', () => {
    // 80ff:fffe inverted is 7f00:0001, 127.0.0.1; 5601:5601 inverted is a9fe:a9fe, 169.254.169.254.
    judged([
      ['2001:0:808:808::80ff:fffe', 'a loopback'],
      ['2001:0:808:808::5601:5601', 'a link-local (cloud metadata)'],
    ]);
  });

  test('refuses a Teredo address whose server is forbidden, even with a public client', () => {
    judged([
      ['2001:0:a00:1::f7f7:f7f7', 'a private'],
      ['2001:0:7f00:1::f7f7:f7f7', 'a loopback'],
    ]);
  });

  test('allows a Teredo address whose server and client are both public', () => {
    judged([['2001:0:808:808::f7f7:f7f7', undefined]]);
  });

  test('judges an address of the well-known NAT64 prefix by the IPv4 address it carries', () => {
    judged([
      ['64:ff9b::808:808', undefined],
      ['64:ff9b::c0a8:1', 'a private'],
      ['64:ff9b::c612:1', 'a benchmarking'],
    ]);
  });

  test('refuses every address of the local-use NAT64 prefix, whatever IPv4 address it seems to carry', () => {
    judged([
      ['64:ff9b:1::808:808', 'a local-use NAT64'],
      ['64:ff9b:1:808:8:800::', 'a local-use NAT64'],
    ]);
  });

  test('judges an IPv4-compatible address by the IPv4 address it carries', () => {
    judged([
      ['::7f00:1', 'a loopback'],
      ['::a9fe:a9fe', 'a link-local (cloud metadata)'],
      ['::2', 'an unspecified'],
      ['::808:808', undefined],
    ]);
  });

  test('refuses the documentation ranges of both families', () => {
    judged([
      ['192.0.2.1', 'a documentation'],
      ['198.51.100.7', 'a documentation'],
      ['203.0.113.255', 'a documentation'],
      ['2001:db8::1', 'a documentation'],
      ['3fff:fff:ffff::1', 'a documentation'],
      ['3fff:1000::1', undefined],
    ]);
  });

  test('refuses the benchmarking ranges of both families', () => {
    judged([
      ['198.18.0.1', 'a benchmarking'],
      ['2001:2::1', 'a benchmarking'],
      ['2001:2:0:ffff::1', 'a benchmarking'],
    ]);
  });

  test('refuses the IETF protocol assignments of both families, and the 6to4 relay anycast range', () => {
    judged([
      ['192.0.0.170', 'an IETF protocol'],
      ['2001:1::1', 'an IETF protocol'],
      ['2001:1ff::1', 'an IETF protocol'],
      ['192.88.99.1', 'a 6to4 relay anycast'],
    ]);
  });

  test('refuses ORCHID, discard-only, deprecated site-local and SRv6 segment-routing addresses', () => {
    judged([
      ['2001:10::1', 'an ORCHID'],
      ['2001:20::1', 'an ORCHID'],
      ['2001:30::1', 'an ORCHID'],
      ['100::1', 'a discard-only'],
      ['100:0:0:1::', undefined],
      ['fec0::1', 'a site-local (deprecated)'],
      ['5f00::1', 'a segment-routing (SRv6)'],
    ]);
  });

  test('allows the special-purpose ranges that are globally reachable (AS112, AMT)', () => {
    judged([
      ['192.175.48.1', undefined],
      ['192.52.193.1', undefined],
      ['2001:4:112::1', undefined],
      ['2001:3::1', undefined],
    ]);
  });

  test('refuses a spelling that Node and ipaddr.js do not both read as the same address', () => {
    judged([
      ['010.0.0.1', 'an unparseable'],
      ['::ffff:0x7f.0.0.1', 'an unparseable'],
      ['fe80::1%eth0.5', 'an unparseable'],
    ]);
  });
});

describe('checkUpstreamUrl', () => {
  const strict = { allowPrivate: false };

  async function refused(url: string, code: UpstreamUrlError['code'], message: RegExp, options = strict) {
    const error = await checkUpstreamUrl(url, options).then(
      () => assert.fail(`${url} was accepted`),
      (e: unknown) => e,
    );
    assert.ok(error instanceof UpstreamUrlError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, message);
  }

  test('a URL with credentials, another scheme, port 0 or no URL at all is invalid, even when private is allowed', async () => {
    for (const options of [strict, { allowPrivate: true }]) {
      await refused('https://user:pass@8.8.8.8/mcp', 'invalid_url', /credentials/, options);
      await refused('https://token@8.8.8.8/mcp', 'invalid_url', /credentials/, options);
      await refused('ftp://8.8.8.8/mcp', 'invalid_url', /http and https/, options);
      await refused('file:///etc/passwd', 'invalid_url', /http and https/, options);
      await refused('http://8.8.8.8:0/mcp', 'invalid_url', /port/, options);
      await refused('http://8.8.8.8:65536/mcp', 'invalid_url', /not a URL/, options);
      await refused('mcp.example.com/mcp', 'invalid_url', /not a URL/, options);
    }
  });

  test('IP literals are judged without resolving, in every spelling the URL parser accepts', async () => {
    await refused('http://10.0.0.5/mcp', 'forbidden_address', /^10\.0\.0\.5 is a private address$/);
    await refused('http://169.254.169.254/latest/meta-data', 'forbidden_address', /cloud metadata/);
    await refused('http://2130706433/', 'forbidden_address', /127\.0\.0\.1 is a loopback/);
    await refused('http://0x7f.1/', 'forbidden_address', /loopback/);
    await refused('http://[::1]:8080/mcp', 'forbidden_address', /^::1 is a loopback address$/);
    await refused('http://[::ffff:127.0.0.1]/', 'forbidden_address', /loopback/);
    await refused('http://[fd12::1]/', 'forbidden_address', /private/);
    await refused('http://[64:ff9b::192.168.0.1]/', 'forbidden_address', /private/);
    assert.equal((await checkUpstreamUrl('https://8.8.8.8:8443/mcp', strict)).href, 'https://8.8.8.8:8443/mcp');
    assert.equal((await checkUpstreamUrl('http://[2606:4700::1111]/mcp', strict)).hostname, '[2606:4700::1111]');
  });

  test('refuses to register a 6to4 upstream that carries 127.0.0.1', async () => {
    await refused('http://[2002:7f00:1::]/', 'forbidden_address', /^2002:7f00:1:: is a loopback address$/);
  });

  test('refuses to register a 6to4 upstream that carries 169.254.169.254', async () => {
    await refused('http://[2002:a9fe:a9fe::]/', 'forbidden_address', /^2002:a9fe:a9fe:: is a link-local \(cloud metadata\) address$/);
  });

  test('refuses to register an IPv4-translated upstream that carries 10.0.0.1', async () => {
    await refused('http://[::ffff:0:a00:1]/', 'forbidden_address', /^::ffff:0:a00:1 is a private address$/);
  });

  test('registers 6to4 and NAT64 upstreams that carry a public IPv4 address', async () => {
    assert.equal((await checkUpstreamUrl('http://[2002:0808:0808::]/mcp', strict)).hostname, '[2002:808:808::]');
    assert.equal((await checkUpstreamUrl('http://[64:ff9b::808:808]/mcp', strict)).hostname, '[64:ff9b::808:808]');
  });

  test('a name is refused when it resolves to a forbidden address; metadata names by name', async () => {
    await refused('http://localhost:3000/mcp', 'forbidden_address', /^localhost resolves to a loopback address$/);
    await refused('http://LOCALHOST./mcp', 'forbidden_address', /^localhost resolves to .*loopback/);
    await refused('http://metadata.google.internal/computeMetadata/v1/', 'forbidden_address', /cloud-metadata name/);
    await refused('http://metadata./', 'forbidden_address', /cloud-metadata name/);
    await refused('http://no-such-host.invalid/mcp', 'unresolvable', /no-such-host\.invalid does not resolve/);
  });

  test('allowPrivate lets private and loopback upstreams through', async () => {
    const options = { allowPrivate: true };
    assert.equal((await checkUpstreamUrl('http://localhost:3000/mcp', options)).port, '3000');
    assert.equal((await checkUpstreamUrl('http://10.0.0.5/mcp', options)).hostname, '10.0.0.5');
    assert.equal((await checkUpstreamUrl('http://[::1]/mcp', options)).hostname, '[::1]');
  });
});

describe('guardedAgent', () => {
  let server: Server;
  let port: number;
  let hits = 0;

  before(async () => {
    server = createServer((req, res) => {
      hits += 1;
      if (req.url === '/moved') res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data' }).end();
      else res.writeHead(200, { 'content-type': 'text/plain' }).end('upstream');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  async function refusedAtConnect(url: string, message: RegExp) {
    const agent = guardedAgent({ allowPrivate: false, connections: 64 });
    const before = hits;
    try {
      const error = await request(url, { dispatcher: agent }).then(
        () => assert.fail(`${url} was reached`),
        (e: unknown) => e,
      );
      assert.ok(error instanceof UpstreamUrlError, String(error));
      assert.equal(error.code, 'forbidden_address');
      assert.match(error.message, message);
      assert.equal(hits, before, 'the upstream saw no request');
    } finally {
      await agent.close();
    }
  }

  test('refuses a loopback IP literal, v4 or v6, before connecting', async () => {
    await refusedAtConnect(`http://127.0.0.1:${port}/`, /^127\.0\.0\.1 is a loopback address$/);
    await refusedAtConnect(`http://[::1]:${port}/`, /^::1 is a loopback address$/);
    await refusedAtConnect(`https://[::ffff:7f00:1]:${port}/`, /loopback/);
  });

  test('refuses a 6to4 literal that carries 127.0.0.1 or 169.254.169.254 before connecting', async () => {
    await refusedAtConnect(`http://[2002:7f00:1::]:${port}/`, /^2002:7f00:1:: is a loopback address$/);
    await refusedAtConnect(`http://[2002:a9fe:a9fe::]:${port}/`, /^2002:a9fe:a9fe:: is a link-local \(cloud metadata\) address$/);
  });

  test('refuses an IPv4-translated literal that carries 10.0.0.1 before connecting', async () => {
    await refusedAtConnect(`http://[::ffff:0:a00:1]:${port}/`, /^::ffff:0:a00:1 is a private address$/);
  });

  test('re-resolves a name at connect time and refuses a forbidden answer', async () => {
    await refusedAtConnect(`http://localhost:${port}/`, /^localhost resolves to a loopback address$/);
  });

  test('with allowPrivate, reaches the local upstream', async () => {
    const agent = guardedAgent({ allowPrivate: true, connections: 64 });
    try {
      const response = await request(`http://127.0.0.1:${port}/`, { dispatcher: agent });
      assert.equal(response.statusCode, 200);
      assert.equal(await response.body.text(), 'upstream');
    } finally {
      await agent.close();
    }
  });

  test('a redirect comes back as it is, not followed', async () => {
    const agent = guardedAgent({ allowPrivate: true, connections: 64 });
    try {
      const before = hits;
      const response = await request(`http://127.0.0.1:${port}/moved`, { dispatcher: agent });
      await response.body.dump();
      assert.equal(response.statusCode, 302);
      assert.equal(response.headers.location, 'http://169.254.169.254/latest/meta-data');
      assert.equal(hits, before + 1);
    } finally {
      await agent.close();
    }
  });
});
