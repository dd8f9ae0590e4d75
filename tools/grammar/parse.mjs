// Parse LogQL and TraceQL queries with Grafana's own lezer grammars.
// stdin: a JSON array of {"language": "logql"|"traceql", "query": "..."}.
// stdout: a JSON array of {"language", "query", "errors": [{"from", "to", "text"}]}.
import { parser as logql } from "@grafana/lezer-logql";
import { parser as traceql } from "@grafana/lezer-traceql";

const parsers = { logql, traceql };
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const items = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const out = items.map(({ language, query }) => {
  const parser = parsers[language];
  if (!parser) throw new Error(`unknown language ${language}`);
  const errors = [];
  parser.parse(query).iterate({
    enter(node) {
      if (node.type.isError) {
        errors.push({ from: node.from, to: node.to, text: query.slice(Math.max(0, node.from - 10), node.to + 10) });
      }
    },
  });
  return { language, query, errors };
});
process.stdout.write(JSON.stringify(out));
