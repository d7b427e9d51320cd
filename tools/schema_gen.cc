// Build-time generator: reads the protocol schema files (protocol/schema/*.json, parsed with
// simdjson) and writes C++ for every message: a struct, encode(), decode(), a walker that
// reports where the fields with a role lie (over contiguous bytes or buffer pieces), a
// sample builder for the generated tests, and the per-API table.
//
// Usage: kpp-schema-gen OUTPUT_HEADER OUTPUT_SOURCE SCHEMA.json...
#include <simdjson.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct schema_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct version_range {
    int low = -1;   // -1: empty
    int high = -1;  // -1 with low >= 0: open ended
    bool empty() const { return low < 0; }
    bool contains(int version) const { return !empty() && version >= low && (high < 0 || version <= high); }
};

version_range parse_range(const std::string& text, const std::string& where) {
    version_range range;
    if (text.empty() || text == "none") return range;
    try {
        if (text.back() == '+') {
            range.low = std::stoi(text.substr(0, text.size() - 1));
        } else if (auto dash = text.find('-'); dash != std::string::npos) {
            range.low = std::stoi(text.substr(0, dash));
            range.high = std::stoi(text.substr(dash + 1));
        } else {
            range.low = range.high = std::stoi(text);
        }
    } catch (const std::exception&) {
        throw schema_error(where + ": bad version range '" + text + "'");
    }
    if (range.high >= 0 && range.high < range.low) throw schema_error(where + ": empty range '" + text + "'");
    return range;
}

enum class kind { boolean, int8, int16, uint16, int32, int64, float64, uuid, string, bytes, records, array, array_of, structure };

struct field_spec {
    std::string name;
    std::string identifier;  // C++-safe name
    kind type = kind::int32;
    kind element = kind::int32;  // for array_of
    version_range versions;
    version_range nullable;
    int tag = -1;
    version_range tagged_versions;
    std::string default_value;
    std::string role;
    std::vector<field_spec> fields;  // for array
    std::string struct_name;         // for array: element struct
};

struct message_spec {
    int api_key = 0;
    std::string api_name;
    std::string direction;
    std::string type_name;  // metadata_request
    version_range valid;
    version_range flexible;
    std::vector<field_spec> fields;
    std::string file;
};

const std::set<std::string> cpp_keywords{"default", "delete", "new", "class", "union", "register", "operator",
                                         "private", "public", "protected", "template", "this", "throw", "try",
                                         "using", "virtual", "namespace", "auto", "bool", "char", "int", "long",
                                         "short", "signed", "unsigned", "void", "for", "while", "do", "if", "else",
                                         "switch", "case", "break", "continue", "return", "static", "struct",
                                         "const", "enum", "explicit", "export", "extern", "friend", "goto",
                                         "inline", "mutable", "sizeof", "typedef", "typename", "volatile"};

std::string snake_of(const std::string& camel) {
    std::string out;
    for (size_t i = 0; i < camel.size(); ++i) {
        char c = camel[i];
        if (std::isupper(static_cast<unsigned char>(c))) {
            if (i > 0) out += '_';
            out += char(std::tolower(static_cast<unsigned char>(c)));
        } else {
            out += c;
        }
    }
    return out;
}

kind parse_kind(const std::string& text, const std::string& where) {
    static const std::map<std::string, kind> kinds{
        {"bool", kind::boolean}, {"int8", kind::int8},       {"int16", kind::int16},     {"uint16", kind::uint16},
        {"int32", kind::int32},  {"int64", kind::int64},     {"float64", kind::float64}, {"uuid", kind::uuid},
        {"string", kind::string}, {"bytes", kind::bytes},    {"records", kind::records}, {"array", kind::array},
        {"struct", kind::structure}};
    auto found = kinds.find(text);
    if (found == kinds.end()) throw schema_error(where + ": unknown type '" + text + "'");
    return found->second;
}

std::string text_of(simdjson::dom::element value, const std::string& where) {
    if (value.is_string()) return std::string(std::string_view(value));
    if (value.is_int64()) return std::to_string(int64_t(value));
    if (value.is_bool()) return bool(value) ? "true" : "false";
    throw schema_error(where + ": expected a string or number");
}

field_spec parse_field(simdjson::dom::object object, const std::string& where, const std::string& parent_struct) {
    field_spec field;
    static const std::set<std::string> known{"name", "type", "versions", "nullable_versions", "tag", "tagged_versions",
                                             "default", "role", "fields", "about"};
    for (auto [key, value] : object) {
        if (!known.count(std::string(key))) throw schema_error(where + ": unknown key '" + std::string(key) + "'");
    }
    simdjson::dom::element value;
    if (object["name"].get(value) || !value.is_string()) throw schema_error(where + ": field without a name");
    field.name = std::string(std::string_view(value));
    std::string here = where + "." + field.name;
    field.identifier = cpp_keywords.count(field.name) ? field.name + "_" : field.name;
    if (object["type"].get(value) || !value.is_string()) throw schema_error(here + ": no type");
    std::string type_text = std::string(std::string_view(value));
    if (type_text.rfind("array_of:", 0) == 0) {
        field.type = kind::array_of;
        field.element = parse_kind(type_text.substr(9), here);
        if (field.element == kind::array || field.element == kind::records)
            throw schema_error(here + ": array_of takes a primitive");
    } else {
        field.type = parse_kind(type_text, here);
    }
    if (object["versions"].get(value)) throw schema_error(here + ": no versions");
    field.versions = parse_range(text_of(value, here), here);
    if (!object["nullable_versions"].get(value)) field.nullable = parse_range(text_of(value, here), here);
    if (!field.nullable.empty() && field.type == kind::structure)
        throw schema_error(here + ": nullable structs are not supported");
    if (!field.nullable.empty() && field.type != kind::string && field.type != kind::bytes &&
        field.type != kind::records && field.type != kind::array && field.type != kind::array_of)
        throw schema_error(here + ": only strings, bytes, records and arrays can be null");
    if (!object["tag"].get(value)) {
        field.tag = int(int64_t(value));
        if (object["tagged_versions"].get(value)) throw schema_error(here + ": tag without tagged_versions");
        field.tagged_versions = parse_range(text_of(value, here), here);
    }
    if (!object["default"].get(value)) field.default_value = text_of(value, here);
    if (!object["role"].get(value)) field.role = text_of(value, here);
    if (field.type == kind::array || field.type == kind::structure) {
        simdjson::dom::array children;
        if (object["fields"].get(children)) throw schema_error(here + ": array or struct without fields");
        field.struct_name = field.identifier + (field.type == kind::array ? "_element" : "_type");
        std::set<std::string> names;
        for (simdjson::dom::element child : children) {
            simdjson::dom::object child_object;
            if (child.get(child_object)) throw schema_error(here + ": a field is not an object");
            field.fields.push_back(parse_field(child_object, here, parent_struct + "::" + field.struct_name));
            if (!names.insert(field.fields.back().name).second)
                throw schema_error(here + ": duplicate field '" + field.fields.back().name + "'");
        }
    }
    return field;
}

message_spec parse_message(const std::string& path) {
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (auto error = parser.load(path).get(root)) throw schema_error(path + ": " + simdjson::error_message(error));
    message_spec message;
    message.file = path;
    simdjson::dom::element value;
    if (root["api_key"].get(value)) throw schema_error(path + ": no api_key");
    message.api_key = int(int64_t(value));
    if (root["api_name"].get(value)) throw schema_error(path + ": no api_name");
    message.api_name = std::string(std::string_view(value));
    if (root["direction"].get(value)) throw schema_error(path + ": no direction");
    message.direction = std::string(std::string_view(value));
    if (message.direction != "request" && message.direction != "response")
        throw schema_error(path + ": direction must be request or response");
    if (root["valid_versions"].get(value)) throw schema_error(path + ": no valid_versions");
    message.valid = parse_range(text_of(value, path), path);
    if (message.valid.empty() || message.valid.high < 0) throw schema_error(path + ": valid_versions must be closed");
    if (root["flexible_versions"].get(value)) throw schema_error(path + ": no flexible_versions");
    message.flexible = parse_range(text_of(value, path), path);
    message.type_name = snake_of(message.api_name) + "_" + message.direction;
    simdjson::dom::array fields;
    if (root["fields"].get(fields)) throw schema_error(path + ": no fields");
    std::set<std::string> names;
    for (simdjson::dom::element field : fields) {
        simdjson::dom::object object;
        if (field.get(object)) throw schema_error(path + ": a field is not an object");
        message.fields.push_back(parse_field(object, path + ":" + message.type_name, message.type_name));
        if (!names.insert(message.fields.back().name).second)
            throw schema_error(path + ": duplicate field '" + message.fields.back().name + "'");
    }
    return message;
}

// ---- emission helpers ---------------------------------------------------------------

std::string condition(const version_range& range, const message_spec& message) {
    if (range.empty()) return "false";
    bool from_start = range.low <= message.valid.low;
    bool to_end = range.high < 0 || range.high >= message.valid.high;
    if (from_start && to_end) return "true";
    if (range.low == range.high) return "version == " + std::to_string(range.low);
    if (from_start) return "version <= " + std::to_string(range.high);
    if (to_end) return "version >= " + std::to_string(range.low);
    return "(version >= " + std::to_string(range.low) + " && version <= " + std::to_string(range.high) + ")";
}

bool ever_nullable(const field_spec& field) { return !field.nullable.empty(); }

std::string primitive_cpp(kind type) {
    switch (type) {
        case kind::boolean: return "bool";
        case kind::int8: return "int8_t";
        case kind::int16: return "int16_t";
        case kind::uint16: return "uint16_t";
        case kind::int32: return "int32_t";
        case kind::int64: return "int64_t";
        case kind::float64: return "double";
        case kind::uuid: return "uuid";
        case kind::string: return "std::string";
        case kind::bytes:
        case kind::records: return "std::vector<std::byte>";
        default: return "?";
    }
}

std::string cpp_type(const field_spec& field) {
    std::string base;
    if (field.type == kind::array)
        base = "std::vector<" + field.struct_name + ">";
    else if (field.type == kind::structure)
        base = field.struct_name;
    else if (field.type == kind::array_of)
        base = "std::vector<" + primitive_cpp(field.element) + ">";
    else
        base = primitive_cpp(field.type);
    return ever_nullable(field) ? "std::optional<" + base + ">" : base;
}

std::string default_initializer(const field_spec& field) {
    if (ever_nullable(field) || field.type == kind::array || field.type == kind::array_of ||
        field.type == kind::structure)
        return "";
    if (field.type == kind::string) return field.default_value.empty() ? "" : " = \"" + field.default_value + "\"";
    if (field.type == kind::bytes || field.type == kind::records || field.type == kind::uuid) return "{}";
    if (field.type == kind::boolean) return field.default_value == "true" ? " = true" : " = false";
    return " = " + (field.default_value.empty() ? std::string("0") : field.default_value);
}

std::string role_enum(const std::string& role) { return role.empty() ? "field_role::none" : "field_role::" + role; }

class emitter {
public:
    std::ostringstream header, source, wrappers;  // source: internal bodies; wrappers: public API

    void emit_struct(const std::vector<field_spec>& fields, const std::string& name, int indent) {
        std::string pad(size_t(indent), ' ');
        header << pad << "struct " << name << " {\n";
        for (const field_spec& field : fields)
            if (!field.fields.empty()) emit_struct(field.fields, field.struct_name, indent + 4);
        for (const field_spec& field : fields)
            header << pad << "    " << cpp_type(field) << " " << field.identifier << default_initializer(field)
                   << ";\n";
        header << pad << "    bool operator==(const " << name << "&) const = default;\n";
        header << pad << "};\n";
    }

    // ---- encode ----
    // Writes one non-null value (nullable fields are handled by the caller).
    void emit_write_value(const field_spec& field, kind type, const std::string& value, const std::string& pad,
                          bool nullable_here) {
        std::ostringstream& out = source;
        switch (type) {
            case kind::boolean: out << pad << "writer.write_int8(" << value << " ? 1 : 0);\n"; break;
            case kind::int8: out << pad << "writer.write_int8(" << value << ");\n"; break;
            case kind::int16: out << pad << "writer.write_int16(" << value << ");\n"; break;
            case kind::uint16: out << pad << "writer.write_int16(int16_t(" << value << "));\n"; break;
            case kind::int32: out << pad << "writer.write_int32(" << value << ");\n"; break;
            case kind::int64: out << pad << "writer.write_int64(" << value << ");\n"; break;
            case kind::float64: out << pad << "write_float64(writer, " << value << ");\n"; break;
            case kind::uuid: out << pad << "writer.write_raw(std::as_bytes(std::span(" << value << ")));\n"; break;
            case kind::string:
                out << pad << "writer.write_string(std::string_view(" << value << "), flexible);\n";
                break;
            case kind::bytes:
            case kind::records:
                if (ever_nullable(field)) {
                    out << pad << "write_bytes_field(writer, " << value << " ? &*" << value << " : nullptr, flexible, "
                        << (nullable_here ? "true" : "false") << ");\n";
                } else {
                    out << pad << "write_bytes_field(writer, &" << value << ", flexible, false);\n";
                }
                break;
            default: break;
        }
    }

    void emit_encode_field(const field_spec& field, const std::string& object, const std::string& pad,
                           const message_spec& message) {
        std::string value = object + "." + field.identifier;
        if (field.type == kind::structure) {
            source << pad << "encode_" << field.struct_name << "_" << depth_id(field) << "(" << value
                   << ", version, writer);\n";
            return;
        }
        std::string nullable_here = condition(field.nullable, message);
        if (field.type == kind::array || field.type == kind::array_of) {
            std::string elements = ever_nullable(field) ? "(*" + value + ")" : value;
            if (ever_nullable(field)) {
                source << pad << "if (!" << value << ") {\n"
                       << pad << "    writer.write_array_length((" << nullable_here << ") ? -1 : 0, flexible);\n"
                       << pad << "} else {\n";
            } else {
                source << pad << "{\n";
            }
            source << pad << "    writer.write_array_length(int32_t(" << elements << ".size()), flexible);\n";
            source << pad << "    for (const auto& element : " << elements << ") {\n";
            if (field.type == kind::array) {
                source << pad << "        encode_" << field.struct_name << "_" << depth_id(field) << "(element, version, writer);\n";
            } else {
                field_spec element_field = field;
                element_field.nullable = {};
                emit_write_value(element_field, field.element, "element", pad + "        ", false);
            }
            source << pad << "    }\n" << pad << "}\n";
            return;
        }
        if (field.type == kind::string && ever_nullable(field)) {
            source << pad << "if (" << nullable_here << ") writer.write_string(" << value
                   << " ? std::optional<std::string_view>(*" << value << ") : std::nullopt, flexible);\n"
                   << pad << "else writer.write_string(std::string_view(" << value
                   << " ? *" << value << " : std::string()), flexible);\n";
            return;
        }
        if ((field.type == kind::bytes || field.type == kind::records) && ever_nullable(field)) {
            source << pad << "write_bytes_field(writer, " << value << " ? &*" << value << " : nullptr, flexible, "
                   << nullable_here << ");\n";
            return;
        }
        emit_write_value(field, field.type, value, pad, false);
    }

    // Unique suffix so element structs of different messages with the same name do not clash.
    std::string depth_id(const field_spec& field) { return std::to_string(element_ids_.at(&field)); }
    void assign_ids(const std::vector<field_spec>& fields) {
        for (const field_spec& field : fields) {
            if (field.fields.empty()) continue;
            element_ids_[&field] = next_id_++;
            assign_ids(field.fields);
        }
    }

    void emit_encode_struct(const std::vector<field_spec>& fields, const std::string& qualified,
                            const std::string& function, const message_spec& message) {
        for (const field_spec& field : fields)
            if (!field.fields.empty())
                emit_encode_struct(field.fields, qualified + "::" + field.struct_name,
                                   "encode_" + field.struct_name + "_" + depth_id(field), message);
        source << "void " << function << "(const " << qualified << "& object, [[maybe_unused]] int16_t version, wire_writer& writer) {\n";
        source << "    [[maybe_unused]] bool flexible = " << condition(message.flexible, message) << ";\n";
        for (const field_spec& field : fields) {
            if (field.tag >= 0) continue;
            source << "    if (" << condition(field.versions, message) << ") {\n";
            emit_encode_field(field, "object", "        ", message);
            source << "    }\n";
        }
        emit_encode_tagged(fields, message);
        source << "}\n\n";
    }

    void emit_encode_tagged(const std::vector<field_spec>& fields, const message_spec& message) {
        std::vector<const field_spec*> tagged;
        for (const field_spec& field : fields)
            if (field.tag >= 0) tagged.push_back(&field);
        std::sort(tagged.begin(), tagged.end(), [](auto a, auto b) { return a->tag < b->tag; });
        source << "    if (flexible) {\n";
        if (tagged.empty()) {
            source << "        writer.write_unsigned_varint(0);\n    }\n";
            return;
        }
        source << "        uint32_t tagged_count = 0;\n";
        for (const field_spec* field : tagged)
            source << "        bool present_" << field->identifier << " = (" << condition(field->tagged_versions, message)
                   << ") && " << differs_from_default(*field, "object." + field->identifier) << ";\n"
                   << "        tagged_count += present_" << field->identifier << ";\n";
        source << "        writer.write_unsigned_varint(tagged_count);\n";
        for (const field_spec* field : tagged) {
            source << "        if (present_" << field->identifier << ") {\n"
                   << "            wire_writer tagged_writer;\n"
                   << "            {\n"
                   << "                wire_writer& outer = writer;\n"
                   << "                (void)outer;\n"
                   << "                wire_writer& writer = tagged_writer;\n";
            emit_encode_field(*field, "object", "                ", message);
            source << "            }\n"
                   << "            writer.write_unsigned_varint(" << field->tag << ");\n"
                   << "            writer.write_unsigned_varint(uint32_t(tagged_writer.size()));\n"
                   << "            writer.write_raw(tagged_writer.bytes());\n"
                   << "        }\n";
        }
        source << "    }\n";
    }

    std::string differs_from_default(const field_spec& field, const std::string& value) {
        if (ever_nullable(field)) return value + ".has_value()";
        switch (field.type) {
            case kind::array:
            case kind::array_of:
            case kind::bytes:
            case kind::records: return "!" + value + ".empty()";
            case kind::string: return value + " != \"" + field.default_value + "\"";
            case kind::uuid: return value + " != uuid{}";
            case kind::structure: return "!(" + value + " == decltype(" + value + "){})";
            case kind::boolean: return value + " != " + (field.default_value == "true" ? "true" : "false");
            default: return value + " != " + (field.default_value.empty() ? "0" : field.default_value);
        }
    }

    // ---- decode and walk (one template body; `store` decides) ----
    void emit_read_struct(const std::vector<field_spec>& fields, const std::string& qualified,
                          const std::string& function, const message_spec& message, bool store) {
        for (const field_spec& field : fields)
            if (!field.fields.empty())
                emit_read_struct(field.fields, qualified + "::" + field.struct_name,
                                 function_name(store, field.struct_name + "_" + depth_id(field)), message, store);
        if (store) {
            source << "template <typename reader_type>\n"
                   << "void " << function << "(reader_type& reader, [[maybe_unused]] int16_t version, " << qualified << "& object) {\n";
        } else {
            source << "template <typename reader_type>\n"
                   << "void " << function << "(reader_type& reader, [[maybe_unused]] int16_t version, [[maybe_unused]] walk_visitor& visitor) {\n";
        }
        source << "    [[maybe_unused]] bool flexible = " << condition(message.flexible, message) << ";\n";
        for (const field_spec& field : fields) {
            if (field.tag >= 0) continue;
            source << "    if ((" << condition(field.versions, message) << ") && reader.ok()) {\n";
            emit_read_field(field, "        ", message, store);
            source << "    }\n";
        }
        // Tagged fields: known tags are read, unknown ones skipped.
        source << "    if (flexible && reader.ok()) {\n"
               << "        uint32_t tagged_count = reader.read_unsigned_varint();\n"
               << "        if (tagged_count > reader.remaining()) reader.fail(wire_error::array_too_large);\n"
               << "        for (uint32_t index = 0; index < tagged_count && reader.ok(); ++index) {\n"
               << "            uint32_t tag = reader.read_unsigned_varint();\n"
               << "            uint32_t size = reader.read_unsigned_varint();\n"
               << "            if (!reader.ok()) break;\n"
               << "            if (size > reader.remaining()) { reader.fail(wire_error::truncated); break; }\n"
               << "            size_t end = reader.position() + size;\n"
               << "            switch (tag) {\n";
        for (const field_spec& field : fields) {
            if (field.tag < 0) continue;
            source << "                case " << field.tag << ":\n"
                   << "                    if (" << condition(field.tagged_versions, message) << ") {\n";
            emit_read_field(field, "                        ", message, store);
            source << "                    }\n"
                   << "                    break;\n";
        }
        source << "                default: break;\n"
               << "            }\n"
               << "            if (!reader.ok()) break;\n"
               << "            if (reader.position() > end) { reader.fail(wire_error::invalid_value); break; }\n"
               << "            reader.skip(end - reader.position());\n"
               << "        }\n"
               << "    }\n"
               << "}\n\n";
    }

    std::string function_name(bool store, const std::string& suffix) {
        return (store ? "decode_" : "walk_") + suffix;
    }

    std::string read_primitive(kind type) {
        switch (type) {
            case kind::boolean: return "reader.read_int8() != 0";
            case kind::int8: return "reader.read_int8()";
            case kind::int16: return "reader.read_int16()";
            case kind::uint16: return "uint16_t(reader.read_int16())";
            case kind::int32: return "reader.read_int32()";
            case kind::int64: return "reader.read_int64()";
            case kind::float64: return "read_float64(reader)";
            default: return "?";
        }
    }

    void emit_read_field(const field_spec& field, const std::string& pad, const message_spec& message, bool store) {
        std::string target = "object." + field.identifier;
        std::string nullable_here = condition(field.nullable, message);
        std::string role = role_enum(field.role);
        std::string report = field.role.empty() ? "" : "visitor.on_field";
        source << pad << "size_t start = reader.position();\n";
        source << pad << "(void)start;\n";
        switch (field.type) {
            case kind::structure:
                if (store) {
                    source << pad << "decode_" << field.struct_name << "_" << depth_id(field) << "(reader, version, "
                           << target << ");\n";
                } else {
                    source << pad << "visitor.on_element_begin(\"" << field.name << "\", 0);\n"
                           << pad << "walk_" << field.struct_name << "_" << depth_id(field) << "(reader, version, visitor);\n"
                           << pad << "visitor.on_element_end();\n";
                }
                break;
            case kind::boolean:
            case kind::int8:
            case kind::int16:
            case kind::uint16:
            case kind::int32:
            case kind::int64:
            case kind::float64: {
                if (store) {
                    source << pad << target << " = " << read_primitive(field.type) << ";\n";
                } else if (!field.role.empty()) {
                    source << pad << "int64_t value = int64_t(" << read_primitive(field.type) << ");\n"
                           << pad << "if (reader.ok()) visitor.on_field(field_event{" << role
                           << ", start, reader.position() - start, value, {}});\n";
                } else {
                    source << pad << "reader.skip(" << fixed_size(field.type) << ");\n";
                }
                break;
            }
            case kind::uuid:
                if (store) {
                    source << pad << "std::string raw;\n" << pad << "reader.read_into(16, raw);\n"
                           << pad << "if (reader.ok()) std::memcpy(" << target << ".data(), raw.data(), 16);\n";
                } else {
                    source << pad << "reader.skip(16);\n";
                    if (!field.role.empty())
                        source << pad << "if (reader.ok()) visitor.on_field(field_event{" << role
                               << ", start, 16, 0, {}});\n";
                }
                break;
            case kind::string:
                source << pad << "int64_t length = read_string_length(reader, flexible, " << nullable_here << ");\n";
                if (store) {
                    if (ever_nullable(field))
                        source << pad << "if (length >= 0) { " << target << ".emplace(); reader.read_into(size_t(length), *"
                               << target << "); }\n";
                    else
                        source << pad << "if (length >= 0) reader.read_into(size_t(length), " << target << ");\n";
                } else if (!field.role.empty()) {
                    source << pad << "std::string text;\n"
                           << pad << "if (length >= 0) reader.read_into(size_t(length), text);\n"
                           << pad << "if (reader.ok()) visitor.on_field(field_event{" << role
                           << ", start, reader.position() - start, length, text});\n";
                } else {
                    source << pad << "if (length > 0) reader.skip(size_t(length));\n";
                }
                break;
            case kind::bytes:
            case kind::records:
                source << pad << "int64_t length = read_bytes_length(reader, flexible, " << nullable_here << ");\n";
                if (store) {
                    std::string into = ever_nullable(field) ? "(" + target + ".emplace())" : target;
                    source << pad << "if (length >= 0) {\n"
                           << pad << "    std::string raw;\n"
                           << pad << "    reader.read_into(size_t(length), raw);\n"
                           << pad << "    auto& bytes = " << into << ";\n"
                           << pad << "    bytes.resize(raw.size());\n"
                           << pad << "    if (!raw.empty()) std::memcpy(bytes.data(), raw.data(), raw.size());\n"
                           << pad << "}\n";
                } else {
                    source << pad << "size_t value_start = reader.position();\n"
                           << pad << "if (length > 0) reader.skip(size_t(length));\n";
                    if (!field.role.empty())
                        source << pad << "if (reader.ok()) visitor.on_field(field_event{" << role
                               << ", value_start, length < 0 ? 0 : size_t(length), length, {}});\n";
                    else
                        source << pad << "(void)value_start;\n";
                }
                break;
            case kind::array:
            case kind::array_of: {
                source << pad << "int64_t count = read_array_length(reader, flexible, " << nullable_here << ");\n";
                if (store) {
                    std::string elements = ever_nullable(field) ? "(*" + target + ")" : target;
                    if (ever_nullable(field)) source << pad << "if (count >= 0) " << target << ".emplace();\n";
                    source << pad << "for (int64_t index = 0; index < count && reader.ok(); ++index) {\n";
                    if (field.type == kind::array) {
                        source << pad << "    auto& element = " << elements << ".emplace_back();\n"
                               << pad << "    decode_" << field.struct_name << "_" << depth_id(field)
                               << "(reader, version, element);\n";
                    } else if (field.element == kind::string) {
                        source << pad << "    int64_t length = read_string_length(reader, flexible, false);\n"
                               << pad << "    auto& element = " << elements << ".emplace_back();\n"
                               << pad << "    if (length >= 0) reader.read_into(size_t(length), element);\n";
                    } else if (field.element == kind::uuid) {
                        source << pad << "    std::string raw;\n" << pad << "    reader.read_into(16, raw);\n"
                               << pad << "    auto& element = " << elements << ".emplace_back();\n"
                               << pad << "    if (reader.ok()) std::memcpy(element.data(), raw.data(), 16);\n";
                    } else {
                        source << pad << "    " << elements << ".push_back(" << read_primitive(field.element) << ");\n";
                    }
                    source << pad << "}\n";
                } else {
                    if (!field.role.empty() && field.type == kind::array)
                        source << pad << "if (reader.ok()) visitor.on_field(field_event{" << role
                               << ", start, reader.position() - start, count, {}});\n";
                    source << pad << "for (int64_t index = 0; index < count && reader.ok(); ++index) {\n";
                    if (field.type == kind::array) {
                        source << pad << "    visitor.on_element_begin(\"" << field.name << "\", int32_t(index));\n"
                               << pad << "    walk_" << field.struct_name << "_" << depth_id(field)
                               << "(reader, version, visitor);\n"
                               << pad << "    visitor.on_element_end();\n";
                    } else if (field.element == kind::string) {
                        source << pad << "    size_t element_start = reader.position();\n"
                               << pad << "    int64_t length = read_string_length(reader, flexible, false);\n";
                        if (!field.role.empty())
                            source << pad << "    std::string text;\n"
                                   << pad << "    if (length >= 0) reader.read_into(size_t(length), text);\n"
                                   << pad << "    if (reader.ok()) visitor.on_field(field_event{" << role
                                   << ", element_start, reader.position() - element_start, length, text});\n";
                        else
                            source << pad << "    (void)element_start;\n"
                                   << pad << "    if (length > 0) reader.skip(size_t(length));\n";
                    } else {
                        source << pad << "    size_t element_start = reader.position();\n";
                        if (!field.role.empty() && field.element != kind::uuid)
                            source << pad << "    int64_t value = int64_t(" << read_primitive(field.element) << ");\n"
                                   << pad << "    if (reader.ok()) visitor.on_field(field_event{" << role
                                   << ", element_start, reader.position() - element_start, value, {}});\n";
                        else
                            source << pad << "    (void)element_start;\n"
                                   << pad << "    reader.skip(" << fixed_size(field.element) << ");\n";
                    }
                    source << pad << "}\n";
                }
                break;
            }
        }
    }

    static int fixed_size(kind type) {
        switch (type) {
            case kind::boolean:
            case kind::int8: return 1;
            case kind::int16:
            case kind::uint16: return 2;
            case kind::int32: return 4;
            case kind::int64:
            case kind::float64: return 8;
            case kind::uuid: return 16;
            default: return 0;
        }
    }

    // ---- samples for the generated tests: every field present, deterministic values ----
    void emit_sample_struct(const std::vector<field_spec>& fields, const std::string& qualified,
                            const std::string& function, const message_spec& message) {
        for (const field_spec& field : fields)
            if (!field.fields.empty())
                emit_sample_struct(field.fields, qualified + "::" + field.struct_name,
                                   "sample_" + field.struct_name + "_" + depth_id(field), message);
        source << qualified << " " << function << "([[maybe_unused]] int16_t version, [[maybe_unused]] uint32_t& seed) {\n"
               << "    [[maybe_unused]] bool flexible = " << condition(message.flexible, message) << ";\n"
               << "    " << qualified << " object;\n";
        for (const field_spec& field : fields) {
            version_range present = field.tag >= 0 ? field.tagged_versions : field.versions;
            source << "    if (" << condition(present, message) << (field.tag >= 0 ? " && flexible" : "") << ") {\n";
            std::string target = "object." + field.identifier;
            std::string into = ever_nullable(field) ? "(" + target + ".emplace())" : target;
            switch (field.type) {
                case kind::array:
                    source << "        for (int i = 0; i < 2; ++i) " << into << ".push_back(sample_" << field.struct_name
                           << "_" << depth_id(field) << "(version, seed));\n";
                    break;
                case kind::structure:
                    source << "        " << into << " = sample_" << field.struct_name << "_" << depth_id(field)
                           << "(version, seed);\n";
                    break;
                case kind::array_of:
                    source << "        for (int i = 0; i < 3; ++i) " << into << ".push_back("
                           << sample_value(field.element) << ");\n";
                    break;
                default:
                    source << "        " << into << " = " << sample_value(field.type) << ";\n";
            }
            source << "    }\n";
        }
        source << "    return object;\n}\n\n";
    }

    static std::string sample_value(kind type) {
        switch (type) {
            case kind::boolean: return "(++seed % 2) == 0";
            case kind::int8: return "int8_t(++seed % 100)";
            case kind::int16: return "int16_t(++seed % 30000)";
            case kind::uint16: return "uint16_t(++seed % 60000)";
            case kind::int32: return "int32_t(++seed * 7919u % 2000000000u)";
            case kind::int64: return "int64_t(++seed) * 1000003";
            case kind::float64: return "double(++seed) / 4";
            case kind::uuid: return "sample_uuid(seed)";
            case kind::string: return "\"s\" + std::to_string(++seed)";
            case kind::bytes:
            case kind::records: return "sample_bytes(seed)";
            default: return "{}";
        }
    }

    void emit_message(const message_spec& message) {
        assign_ids(message.fields);
        const std::string& name = message.type_name;
        emit_struct(message.fields, name, 0);
        header << "void encode(const " << name << "& message, int16_t version, wire_writer& writer);\n"
               << "wire_error decode(" << name << "& message, int16_t version, std::span<const std::byte> bytes, size_t* consumed = nullptr);\n"
               << "wire_error walk_" << name << "(wire_reader& reader, int16_t version, walk_visitor& visitor);\n"
               << "wire_error walk_" << name << "(segmented_reader& reader, int16_t version, walk_visitor& visitor);\n"
               << name << " sample_" << name << "(int16_t version);\n\n";

        emit_encode_struct(message.fields, name, "encode_" + name + "_body", message);
        emit_read_struct(message.fields, name, "decode_" + name + "_body", message, true);
        emit_read_struct(message.fields, name, "walk_" + name + "_body", message, false);
        emit_sample_struct(message.fields, name, "sample_" + name + "_body", message);
        wrappers << "void encode(const " << name << "& message, int16_t version, wire_writer& writer) {\n"
               << "    encode_" << name << "_body(message, version, writer);\n}\n\n"
               << "wire_error decode(" << name << "& message, int16_t version, std::span<const std::byte> bytes, size_t* consumed) {\n"
               << "    wire_reader reader(bytes);\n"
               << "    message = " << name << "{};\n"
               << "    decode_" << name << "_body(reader, version, message);\n"
               << "    if (consumed) *consumed = reader.position();\n"
               << "    return reader.error();\n}\n\n"
               << "wire_error walk_" << name << "(wire_reader& reader, int16_t version, walk_visitor& visitor) {\n"
               << "    walk_" << name << "_body(reader, version, visitor);\n    return reader.error();\n}\n\n"
               << "wire_error walk_" << name << "(segmented_reader& reader, int16_t version, walk_visitor& visitor) {\n"
               << "    walk_" << name << "_body(reader, version, visitor);\n    return reader.error();\n}\n\n"
               << name << " sample_" << name << "(int16_t version) {\n"
               << "    uint32_t seed = " << message.api_key * 100 + (message.direction == "request" ? 0 : 50) << ";\n"
               << "    return sample_" << name << "_body(version, seed);\n}\n\n";
    }

private:
    std::map<const field_spec*, int> element_ids_;
    int next_id_ = 0;
};

void collect_roles(const std::vector<field_spec>& fields, std::set<std::string>& roles) {
    for (const field_spec& field : fields) {
        if (!field.role.empty()) roles.insert(field.role);
        collect_roles(field.fields, roles);
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::cerr << "usage: kpp-schema-gen OUTPUT_HEADER OUTPUT_SOURCE SCHEMA.json...\n";
        return 2;
    }
    std::vector<message_spec> messages;
    try {
        for (int index = 3; index < argc; ++index) messages.push_back(parse_message(argv[index]));
    } catch (const schema_error& error) {
        std::cerr << "kpp-schema-gen: " << error.what() << "\n";
        return 1;
    }
    std::sort(messages.begin(), messages.end(), [](const message_spec& a, const message_spec& b) {
        return std::tie(a.api_key, a.direction) < std::tie(b.api_key, b.direction);
    });
    std::set<std::string> roles;
    for (const auto& message : messages) collect_roles(message.fields, roles);

    emitter out;
    out.header << "// Generated by tools/schema_gen.cc from protocol/schema/*.json. Do not edit.\n"
               << "#pragma once\n\n#include <array>\n#include <cstdint>\n#include <optional>\n#include <span>\n"
               << "#include <string>\n#include <string_view>\n#include <vector>\n\n"
               << "#include \"protocol/segmented_reader.h\"\n#include \"protocol/wire.h\"\n\n"
               << "namespace kpp::protocol::messages {\n\n"
               << "using uuid = std::array<uint8_t, 16>;\n\n"
               << "enum class field_role : uint8_t {\n    none,\n";
    for (const std::string& role : roles) out.header << "    " << role << ",\n";
    out.header << "};\nconst char* to_string(field_role role);\n\n"
               << "// One field with a role, where it lies in the message: `offset` and `size_bytes` cover the\n"
               << "// whole encoded field (for bytes and records: the value only, after the length);\n"
               << "// `value` is the integer, or the length for strings, bytes, records and arrays (-1: null).\n"
               << "struct field_event {\n    field_role role;\n    size_t offset;\n    size_t size_bytes;\n"
               << "    int64_t value;\n    std::string text;  // strings only\n};\n\n"
               << "struct walk_visitor {\n    virtual void on_field(const field_event& event) { (void)event; }\n"
               << "    virtual void on_element_begin(std::string_view array_name, int32_t index) { (void)array_name; (void)index; }\n"
               << "    virtual void on_element_end() {}\n    virtual ~walk_visitor() = default;\n};\n\n";

    out.source << "// Generated by tools/schema_gen.cc from protocol/schema/*.json. Do not edit.\n"
               << "#include \"kpp_messages.h\"\n\n#include <cstring>\n\n"
               << "namespace kpp::protocol::messages {\nnamespace {\n\n"
               << "[[maybe_unused]] void write_float64(wire_writer& writer, double value) {\n"
               << "    int64_t bits;\n    std::memcpy(&bits, &value, sizeof bits);\n    writer.write_int64(bits);\n}\n\n"
               << "template <typename reader_type>\n[[maybe_unused]] double read_float64(reader_type& reader) {\n"
               << "    int64_t bits = reader.read_int64();\n    double value;\n    std::memcpy(&value, &bits, sizeof value);\n    return value;\n}\n\n"
               << "[[maybe_unused]] void write_bytes_field(wire_writer& writer, const std::vector<std::byte>* bytes, bool flexible, bool nullable) {\n"
               << "    if (!bytes && nullable) {\n        if (flexible) writer.write_unsigned_varint(0); else writer.write_int32(-1);\n        return;\n    }\n"
               << "    size_t size = bytes ? bytes->size() : 0;\n"
               << "    if (flexible) writer.write_unsigned_varint(uint32_t(size) + 1); else writer.write_int32(int32_t(size));\n"
               << "    if (bytes) writer.write_raw(*bytes);\n}\n\n"
               << "// Lengths from the wire, checked: -1 only where null is allowed, never past the end.\n"
               << "template <typename reader_type>\nint64_t checked_length(reader_type& reader, int64_t length, bool nullable) {\n"
               << "    if (!reader.ok()) return -1;\n"
               << "    if (length < -1 || (length == -1 && !nullable)) { reader.fail(wire_error::negative_length); return -1; }\n"
               << "    if (length > int64_t(reader.remaining())) { reader.fail(wire_error::truncated); return -1; }\n"
               << "    return length;\n}\n\n"
               << "template <typename reader_type>\nint64_t read_string_length(reader_type& reader, bool flexible, bool nullable) {\n"
               << "    int64_t length = flexible ? int64_t(reader.read_unsigned_varint()) - 1 : reader.read_int16();\n"
               << "    return checked_length(reader, length, nullable);\n}\n\n"
               << "template <typename reader_type>\nint64_t read_bytes_length(reader_type& reader, bool flexible, bool nullable) {\n"
               << "    int64_t length = flexible ? int64_t(reader.read_unsigned_varint()) - 1 : reader.read_int32();\n"
               << "    return checked_length(reader, length, nullable);\n}\n\n"
               << "// An element takes at least one byte, so a count beyond the bytes left is a lie.\n"
               << "template <typename reader_type>\nint64_t read_array_length(reader_type& reader, bool flexible, bool nullable) {\n"
               << "    int64_t count = flexible ? int64_t(reader.read_unsigned_varint()) - 1 : reader.read_int32();\n"
               << "    if (!reader.ok()) return -1;\n"
               << "    if (count < -1 || (count == -1 && !nullable)) { reader.fail(wire_error::negative_length); return -1; }\n"
               << "    if (count > int64_t(reader.remaining())) { reader.fail(wire_error::array_too_large); return -1; }\n"
               << "    return count;\n}\n\n"
               << "[[maybe_unused]] uuid sample_uuid(uint32_t& seed) {\n    uuid value{};\n"
               << "    for (auto& byte : value) byte = uint8_t(++seed);\n    return value;\n}\n\n"
               << "[[maybe_unused]] std::vector<std::byte> sample_bytes(uint32_t& seed) {\n"
               << "    std::vector<std::byte> value(5 + seed % 7);\n    for (auto& byte : value) byte = std::byte(++seed);\n    return value;\n}\n\n";
    for (const auto& message : messages) out.emit_message(message);
    out.source << "}  // namespace\n\n" << out.wrappers.str();

    out.header << "const char* to_string(field_role role);\n\n"
               << "// The table of generated messages, for the API table and the generated tests.\n"
               << "struct message_info {\n    int16_t api_key;\n    const char* api_name;\n    bool is_request;\n"
               << "    int16_t min_version;\n    int16_t max_version;\n    int16_t first_flexible_version;  // -1: never\n"
               << "    const char* type_name;\n"
               << "    std::vector<std::byte> (*encode_sample)(int16_t version);\n"
               << "    wire_error (*walk_contiguous)(wire_reader& reader, int16_t version, walk_visitor& visitor);\n"
               << "    wire_error (*walk_segmented)(segmented_reader& reader, int16_t version, walk_visitor& visitor);\n"
               << "    bool (*decode_reencode)(std::span<const std::byte> bytes, int16_t version, std::vector<std::byte>& out);\n"
               << "};\nstd::span<const message_info> all_messages();\n"
               << "// The message of `api_key` in that direction whose versions include `version`; nullptr if none.\n"
               << "const message_info* find_message(int16_t api_key, int16_t version, bool is_request);\n\n"
               << "}  // namespace kpp::protocol::messages\n";
    std::ofstream header_file(argv[1]);
    header_file << out.header.str();
    std::ofstream source_file(argv[2]);
    source_file << out.source.str();
    source_file << "const char* to_string(field_role role) {\n    switch (role) {\n        case field_role::none: return \"none\";\n";
    for (const std::string& role : roles) source_file << "        case field_role::" << role << ": return \"" << role << "\";\n";
    source_file << "    }\n    return \"?\";\n}\n\nnamespace {\n";
    for (const auto& message : messages) {
        const std::string& name = message.type_name;
        source_file << "std::vector<std::byte> encode_sample_" << name << "(int16_t version) {\n"
                    << "    wire_writer writer;\n    encode(sample_" << name << "(version), version, writer);\n"
                    << "    return std::move(writer.bytes());\n}\n"
                    << "bool decode_reencode_" << name << "(std::span<const std::byte> bytes, int16_t version, std::vector<std::byte>& out) {\n"
                    << "    " << name << " message;\n    if (decode(message, version, bytes) != wire_error::none) return false;\n"
                    << "    wire_writer writer;\n    encode(message, version, writer);\n    out = std::move(writer.bytes());\n    return true;\n}\n"
                    << "wire_error (*const walk_contiguous_" << name << ")(wire_reader&, int16_t, walk_visitor&) = &walk_" << name << ";\n"
                    << "wire_error (*const walk_segmented_" << name << ")(segmented_reader&, int16_t, walk_visitor&) = &walk_" << name << ";\n";
    }
    source_file << "}  // namespace\n\nstd::span<const message_info> all_messages() {\n    static const message_info table[] = {\n";
    for (const auto& message : messages) {
        const std::string& name = message.type_name;
        int first_flexible = message.flexible.empty() ? -1 : std::max(message.flexible.low, message.valid.low);
        source_file << "        {" << message.api_key << ", \"" << message.api_name << "\", "
                    << (message.direction == "request" ? "true" : "false") << ", " << message.valid.low << ", "
                    << message.valid.high << ", " << first_flexible << ", \"" << name << "\", &encode_sample_" << name
                    << ", walk_contiguous_" << name << ", walk_segmented_" << name << ", &decode_reencode_" << name
                    << "},\n";
    }
    source_file << "    };\n    return table;\n}\n\n"
                << "const message_info* find_message(int16_t api_key, int16_t version, bool is_request) {\n"
                << "    for (const message_info& info : all_messages())\n"
                << "        if (info.is_request == is_request && info.api_key == api_key && version >= info.min_version &&\n"
                << "            version <= info.max_version)\n"
                << "            return &info;\n"
                << "    return nullptr;\n}\n\n}  // namespace kpp::protocol::messages\n";
    return header_file && source_file ? 0 : 1;
}
