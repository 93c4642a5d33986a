import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Hono } from 'hono';

const require = createRequire(import.meta.url);
const own = (name: string) => fileURLToPath(new URL(`../console/${name}`, import.meta.url));

/** Each file the console serves: its path under /console, where it is read from, and its type. */
const files: [path: string, file: string, type: string][] = [
  ['/', own('index.html'), 'text/html; charset=utf-8'],
  ['/app.js', own('app.js'), 'text/javascript; charset=utf-8'],
  ['/console.css', own('console.css'), 'text/css; charset=utf-8'],
  ['/vendor/uPlot.js', require.resolve('uplot/dist/uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
  ['/vendor/uPlot.css', require.resolve('uplot/dist/uPlot.min.css'), 'text/css; charset=utf-8'],
];

/** Only this instance's own files run on a console page, and no other site may frame it. */
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/**
 * The operator console's static files, at `/console`: a page, its script and styles, and uPlot
 * (the charting library, from node_modules), all read once at start and served from memory, so
 * the console works offline and nothing is fetched from elsewhere. The page talks to the
 * operator and admin APIs with its session cookie (see console-session.ts).
 *
 * @example app.route('/console', consoleAssets());
 */
export function consoleAssets(): Hono {
  const app = new Hono();
  for (const [path, file, type] of files) {
    const body = readFileSync(file);
    app.get(path, (c) => {
      c.header('content-type', type);
      c.header('cache-control', 'no-cache');
      c.header('x-content-type-options', 'nosniff');
      if (path === '/') c.header('content-security-policy', CSP);
      return c.body(body);
    });
  }
  return app;
}
