// Signing in from the page: the same exchange as `siot login`
// (docs/protocol.md, "Login tokens"). A NATS connection over WebSocket
// signs in with the address and password as a `login` identity, asks
// `siot.login.<emailID>.api.token` for a token and closes; the link then
// signs in with the token. The password is never stored.

import { emailID, natsConnect, normalizeEmail } from "../link/index.ts";
import { decodeMessage, encodeMessage, RemoteError } from "../wire/messages.ts";
import type { Session } from "./replica.ts";

/** A sign-in the server refused, with a message for the person. */
export class SignInError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SignInError";
  }
}

/** Signs in and returns the session, or throws a SignInError that says why. */
export async function signIn(wsURL: string, email: string, password: string, timeoutMs = 20_000): Promise<Session> {
  email = normalizeEmail(email);
  if (email === "" || password === "") throw new SignInError("Enter your email address and password.");
  const prefix = `siot.login.${emailID(email)}`;
  let nc;
  try {
    nc = await natsConnect({ servers: wsURL, user: email, pass: password, inboxPrefix: `${prefix}.inbox`, reconnect: false, name: "siot web login", timeout: timeoutMs });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    if (/authorization violation/i.test(msg)) throw new SignInError("Wrong email address or password.");
    throw new SignInError(`Cannot reach the server: ${msg}`);
  }
  try {
    const server = nc.info?.server_name ?? "";
    const subj = /^[A-Za-z0-9_-]{1,64}$/.test(server) ? `${prefix}.api.token.${server}` : `${prefix}.api.token`;
    const m = await nc.request(subj, encodeMessage("token-request", { ttl: 0n }), { timeout: timeoutMs });
    const r = decodeMessage(m.data, "token-reply");
    return { user: r.user, email, token: r.token, exp: Number(r.expires) };
  } catch (e) {
    if (e instanceof RemoteError) throw new SignInError(`The server refused: ${e.remote}`);
    throw new SignInError(`Sign-in failed: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    await nc.close().catch(() => {});
  }
}

const sessionKey = "siot.session";

/** The session kept in localStorage, if any and well-formed. */
export function loadSession(storage: Storage = localStorage): Session | undefined {
  try {
    const s = JSON.parse(storage.getItem(sessionKey) ?? "null") as Partial<Session> | null;
    if (s && typeof s.user === "string" && /^[0-9a-f-]{36}$/.test(s.user) && typeof s.token === "string" && typeof s.exp === "number") {
      return { user: s.user, email: String(s.email ?? ""), token: s.token, exp: s.exp };
    }
  } catch {
    // a damaged entry is no session
  }
  return undefined;
}

export function saveSession(s: Session, storage: Storage = localStorage): void {
  storage.setItem(sessionKey, JSON.stringify(s));
}

export function forgetSession(storage: Storage = localStorage): void {
  storage.removeItem(sessionKey);
}
