"""Exports for serving engines (`rejoinder export --for vllm|llama.cpp`): chat templates
that reproduce a format (`chat_templates`) and the files each engine reads (`engines`).

Above `generation` in the package order: an export's sampling defaults are a decoding
preset's.
"""
