-- Argo CD health check for serving.ferry.dev/v1alpha1 ModelDeployment.
--
-- Reads only what the Ferry operator writes to the status subresource: observedGeneration and
-- the Ready / Progressing / Degraded conditions (Kubernetes condition conventions).
--   Healthy      Ready=True for the current generation, nothing progressing or degraded.
--   Progressing  the operator has not observed the current generation yet, Progressing=True,
--                or Ready is not True for a reason that may still resolve by itself.
--   Degraded     Degraded=True, or Ready=False with a reason that needs a change to recover.
-- Written for Lua 5.1 (gopher-lua, which Argo CD embeds); tested by tests/chart/test_argocd_health.py
-- against the cases in health_test.yaml.

-- Ready=False reasons (as the Ferry operator writes them) that do not resolve by waiting: the
-- spec, the image, the model or the cluster must change. The operator also sets Degraded=True for
-- each of them; this list covers a status written without a Degraded condition.
local terminalReasons = {
  InvalidSpec = true,
  ApplyFailed = true,
  ProgressDeadlineExceeded = true,
  ReplicaFailure = true,
  CrashLoopBackOff = true,
  ModelLoadFailed = true,
  ImagePullBackOff = true,
  CreateContainerConfigError = true,
}

local function findCondition(conditions, conditionType)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function describe(condition, fallback)
  if condition == nil then
    return fallback
  end
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return fallback
end

-- A condition computed for an older generation says nothing about the current spec.
local function isStale(condition, generation)
  return generation ~= nil and condition.observedGeneration ~= nil
    and condition.observedGeneration < generation
end

local hs = {}
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ferry operator to observe the ModelDeployment"
  return hs
end

local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ferry operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions
local ready = findCondition(conditions, "Ready")
local progressing = findCondition(conditions, "Progressing")
local degraded = findCondition(conditions, "Degraded")

if degraded ~= nil and degraded.status == "True" and not isStale(degraded, generation) then
  hs.status = "Degraded"
  hs.message = describe(degraded, "The ModelDeployment is degraded")
  return hs
end

if ready ~= nil and ready.status == "False" and terminalReasons[ready.reason]
    and not isStale(ready, generation) then
  hs.status = "Degraded"
  hs.message = describe(ready, "The ModelDeployment is not ready")
  return hs
end

if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(progressing, "Rolling out")
  return hs
end

if ready ~= nil and ready.status == "True" and not isStale(ready, generation) then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the Ready condition")
return hs
