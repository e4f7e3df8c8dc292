"""Write a Cog predictor's OpenAPI schema to stdout as JSON.

Cog's CLI normally writes .cog/openapi_schema.json at build time; without Docker there is no
CLI, so we build the same document from cog's own inspector. Run inside the project directory
with the predictor reference (e.g. "predict.py:Predictor") as argv[1] and, for a trainable
model, the trainer reference as argv[2]. Prints {"cog_version", "schema"}.
"""
import json
import os
import sys

sys.path.insert(0, os.getcwd())

from cog import _inspector  # noqa: E402


def field_schema(name, field):
    schema = dict(field.type.json_type())
    schema["title"] = name.replace("_", " ").title()
    schema["x-order"] = field.order
    if field.description is not None:
        schema["description"] = field.description
    default = field.default
    if default is not None and type(default).__name__ not in ("FieldInfo", "_Missing"):
        try:
            schema["default"] = field.type.json_encode(default)
        except Exception:
            schema["default"] = default
    integral = schema.get("type") == "integer"
    if field.ge is not None:
        schema["minimum"] = int(field.ge) if integral else field.ge
    if field.le is not None:
        schema["maximum"] = int(field.le) if integral else field.le
    if field.min_length is not None:
        schema["minLength"] = field.min_length
    if field.max_length is not None:
        schema["maxLength"] = field.max_length
    if field.regex is not None:
        schema["pattern"] = field.regex
    if field.deprecated:
        schema["deprecated"] = True
    return schema


def add_schemas(ref, mode, doc):
    path, _, obj = ref.partition(":")
    module = path[:-3] if path.endswith(".py") else path
    module = module.replace("/", ".")
    info = _inspector.create_predictor(module, obj)
    schemas = doc["components"]["schemas"]
    properties = {}
    required = []
    for name, field in info.inputs.items():
        prop = field_schema(name, field)
        if field.choices is not None:
            schemas[name] = {
                "title": name,
                "description": "An enumeration.",
                "type": prop.get("type", "string"),
                "enum": list(field.choices),
            }
            prop = {k: v for k, v in prop.items() if k not in ("type", "format")}
            prop["allOf"] = [{"$ref": f"#/components/schemas/{name}"}]
        properties[name] = prop
        optional = field.type.repetition.name.startswith("OPTIONAL")
        if "default" not in prop and not optional:
            required.append(name)
    input_name = "TrainingInput" if mode == "train" else "Input"
    output_name = "TrainingOutput" if mode == "train" else "Output"
    schemas[input_name] = {"title": input_name, "type": "object", "properties": properties}
    if required:
        schemas[input_name]["required"] = required
    output = info.output.json_type()
    output["title"] = output_name
    schemas[output_name] = output
    post = {"summary": "Train" if mode == "train" else "Predict"}
    if output.get("x-cog-array-type") == "iterator":
        post["x-cog-streaming"] = True
    doc["paths"]["/trainings" if mode == "train" else "/predictions"] = {"post": post}


def main():
    # The answer goes to the standard output this process started with; from here on, file
    # descriptor 1 is standard error, so a predictor that prints while it is imported (from
    # Python or from native code) cannot corrupt the answer.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    doc = {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": {}},
    }
    add_schemas(sys.argv[1], "predict", doc)
    if len(sys.argv) > 2 and sys.argv[2]:
        add_schemas(sys.argv[2], "train", doc)
    import cog

    json.dump({"cog_version": cog.__version__, "schema": doc}, out)
    out.flush()


if __name__ == "__main__":
    try:
        main()
    except BaseException as e:  # a predictor that fails to import may raise anything
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
