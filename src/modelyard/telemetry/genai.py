"""Bucket boundaries and names from the OpenTelemetry GenAI semantic conventions, and the faces a path belongs to."""

from __future__ import annotations

from ..types import Task

# The conventions' recommended explicit bucket boundaries (gen_ai.server.request.duration and
# gen_ai.client.operation.duration; gen_ai.server.time_to_first_token; gen_ai.server.time_per_output_token;
# gen_ai.client.token.usage).
DURATION = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
# Ours, not the conventions': the gateway's own time is well under a millisecond when all is well.
OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Background work (database writes, job claims): milliseconds to minutes.
BACKGROUND = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# gen_ai.operation.name for each task (the conventions' well-known values where one fits, else the task's name)
OPERATION = {Task.CHAT: "chat", Task.COMPLETION: "text_completion", Task.EMBEDDING: "embeddings"}


def operation(task: Task) -> str:
    return OPERATION.get(task) or task.value


# The face a request came in through, by path prefix, longest first where two overlap. A path none of these
# matches is the platform's own (render, prompt rewrite, the console's playground).
FACES: tuple[tuple[str, str], ...] = (
    ("/v1/messages", "anthropic"), ("/anthropic/", "anthropic"),
    ("/v1beta/", "gemini"), ("/api/v1beta/", "gemini"),
    ("/api/v1/generate", "studio"), ("/api/v1/status/", "studio"),
    ("/v1/", "openai"), ("/openai/v1/", "openai"), ("/api/v1/", "openai"),
    ("/fal/", "fal"), ("/api/jobs", "jobs"), ("/api/agents", "agents"), ("/api/runs", "agents"),
)


def face_of(path: str) -> str:
    for prefix, face in FACES:
        if path.startswith(prefix):
            return face
    return "platform"
