// The one place that decides what the load harness may drive: only this machine's loopback
// (http://127.0.0.1:<port>). Every script that takes a URL to load checks it here.

const LOOPBACK = /^http:\/\/127\.0\.0\.1:\d+$/;

/** The URL if it is loopback; otherwise throws, naming the flag it came from. */
export function loopback(url, flag) {
  if (!LOOPBACK.test(url ?? "")) throw new Error(`${flag}: ${url} is not http://127.0.0.1:<port>; only loopback is driven`);
  return url;
}

/** `--target name=url` values as `{name, url}`, each URL checked by `loopback`. */
export function parseTargets(values) {
  return values.map((value) => {
    const [name, url] = value.split("=");
    return { name, url: loopback(url, `--target ${name}`) };
  });
}
