// Part of `npm run build`: the console's static files (src/console) go beside the compiled server,
// which serves them from dist/src/console exactly as it serves them from src/console under tsx.
import { cpSync } from 'node:fs';

cpSync('src/console', 'dist/src/console', { recursive: true });
