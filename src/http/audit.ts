import type { Context } from 'hono';
import { newId } from '../store/ids.js';
import type { Store } from '../store/store.js';
import { clientAddress } from './caller.js';

/**
 * The audit log's writer for routes that change things: who (`actor`: `admin`, `operator:<id>`),
 * on whose account, did what to which target, from which address, with what detail (amounts as
 * decimal strings). Written before the answer that reports the change.
 *
 * @example const audit = auditor(store); await audit(c, 'admin', undefined, 'credits.adjust', 'key_…', { usd: '-1.50' });
 */
export function auditor(store: Store) {
  return (c: Context, actor: string, operatorId: string | undefined, action: string, target?: string, detail?: Record<string, unknown>) => {
    const ip = clientAddress(c);
    return store.operators.audit({
      id: newId('au'),
      at: Date.now(),
      actor,
      action,
      ...(operatorId ? { operatorId } : {}),
      ...(target ? { target } : {}),
      ...(ip ? { ip } : {}),
      ...(detail ? { detail } : {}),
    });
  };
}
