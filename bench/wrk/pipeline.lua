-- pipeline.lua: HTTP/1.1 pipelining for wrk, used by bench/http.py.
--
--   wrk -t1 -c64 -d5s -s bench/wrk/pipeline.lua http://127.0.0.1:PORT/ -- 16
--
-- Every connection writes DEPTH requests (the argument after `--`, default
-- 16) for the URL's path in one write, waits until wrk has parsed all DEPTH
-- responses, and repeats. wrk learns the depth by counting the requests in
-- the string that request() returns. Defining request() makes wrk call it
-- once per batch (its "dynamic" mode); bench/http.py runs depth 1 without
-- this script, on wrk's static fast path.
--
-- Latency: wrk records one sample per batch (from its write to the batch's
-- last response) and then "corrects" the histogram for coordinated omission
-- with an expected interval of runtime / (responses / connections). With
-- pipelining that interval counts responses, not batches, so the correction
-- adds samples below the smallest measured one, where wrk's percentile walk
-- never looks: the `--latency` distribution of a pipelined run is wrong
-- (zeros above the median), and wrk 4.1's Lua API does not expose the
-- histogram to undo it. bench/http.py therefore reports no percentiles for
-- pipelined runs, only the mean batch round trip from Little's law.

local batch

function init(args)
   local depth = tonumber(args[1]) or 16
   if depth < 1 then
      depth = 1
   end
   local reqs = {}
   for i = 1, depth do
      reqs[i] = wrk.format()
   end
   batch = table.concat(reqs)
end

function request()
   return batch
end
