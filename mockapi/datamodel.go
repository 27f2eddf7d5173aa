package mockapi

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
)

// serviceModel is a service model the mock accepts in AddServiceToReservation.
type serviceModel struct {
	Family     string
	Name       string
	Attributes []modelAttribute // in data model order, which is also the render order
}

// modelAttribute is an attribute attached to a service model, with the value a service
// gets when AddServiceToReservation does not set it.
type modelAttribute struct {
	Name    string
	Type    string
	Default string
}

func (m *serviceModel) attribute(name string) (modelAttribute, bool) {
	for _, a := range m.Attributes {
		if a.Name == name {
			return a, true
		}
	}
	return modelAttribute{}, false
}

// The XML below mirrors the parts of DataModelSchema.xsd the mock needs. Tags carry no
// namespace, so elements match by local name whatever the default namespace is.
type dmInfo struct {
	XMLName    xml.Name     `xml:"DataModelInfo"`
	Attributes []dmAttrInfo `xml:"Attributes>AttributeInfo"`
	Families   []dmFamily   `xml:"ResourceFamilies>ResourceFamily"`
}

type dmAttrInfo struct {
	Name         string `xml:"Name,attr"`
	Type         string `xml:"Type,attr"`
	DefaultValue string `xml:"DefaultValue,attr"`
}

type dmAttached struct {
	Name string `xml:"Name,attr"`
}

type dmValue struct {
	Name  string `xml:"Name,attr"`
	Value string `xml:"Value,attr"`
}

type dmFamily struct {
	Name      string       `xml:"Name,attr"`
	IsService string       `xml:"IsService,attr"`
	Attached  []dmAttached `xml:"AttachedAttributes>AttachedAttribute"`
	Values    []dmValue    `xml:"AttributeValues>AttributeValue"`
	Models    []dmModel    `xml:"Models>ResourceModel"`
}

type dmModel struct {
	Name     string       `xml:"Name,attr"`
	Attached []dmAttached `xml:"AttachedAttributes>AttachedAttribute"`
	Values   []dmValue    `xml:"AttributeValues>AttributeValue"`
}

// parseDataModel reads a CloudShell DataModelInfo document (as imported in a package's
// DataModel/datamodel.xml) and returns its service models: the models of families with
// IsService="true", each with the attributes attached to the model or its family.
// Resource families are ignored; resources are declared with WithResource instead.
func parseDataModel(data []byte) ([]serviceModel, error) {
	data = bytes.TrimPrefix(data, utf8BOM)
	var info dmInfo
	d := xml.NewDecoder(bytes.NewReader(data))
	d.CharsetReader = asciiCharsetReader
	if err := d.Decode(&info); err != nil {
		return nil, fmt.Errorf("data model: %w", err)
	}
	defs := make(map[string]dmAttrInfo, len(info.Attributes))
	for _, a := range info.Attributes {
		if a.Name == "" {
			return nil, errors.New("data model: AttributeInfo without a Name")
		}
		defs[a.Name] = a
	}
	var models []serviceModel
	seen := map[string]bool{}
	for _, fam := range info.Families {
		if fam.IsService != "true" {
			continue
		}
		for _, dm := range fam.Models {
			if dm.Name == "" {
				return nil, fmt.Errorf("data model: family '%s' has a ResourceModel without a Name", fam.Name)
			}
			if seen[dm.Name] {
				return nil, fmt.Errorf("data model: service model '%s' is defined twice", dm.Name)
			}
			seen[dm.Name] = true
			m := serviceModel{Family: fam.Name, Name: dm.Name}
			// Family attributes apply to every model of the family, as in CloudShell.
			attached := append(append([]dmAttached{}, fam.Attached...), dm.Attached...)
			for _, at := range attached {
				if _, dup := m.attribute(at.Name); dup {
					continue
				}
				def, ok := defs[at.Name]
				if !ok {
					return nil, fmt.Errorf("data model: attribute '%s' attached to model '%s' has no AttributeInfo", at.Name, dm.Name)
				}
				m.Attributes = append(m.Attributes, modelAttribute{
					Name:    at.Name,
					Type:    def.Type,
					Default: defaultValue(at.Name, def.DefaultValue, fam.Values, dm.Values),
				})
			}
			models = append(models, m)
		}
	}
	if len(models) == 0 {
		return nil, errors.New("data model: no service family (IsService=\"true\") with models")
	}
	return models, nil
}

// defaultValue: a model's AttributeValue overrides its family's, which overrides the
// attribute's global DefaultValue.
func defaultValue(name, global string, family, model []dmValue) string {
	v := global
	for _, list := range [][]dmValue{family, model} {
		for _, av := range list {
			if av.Name == name {
				v = av.Value
			}
		}
	}
	return v
}
