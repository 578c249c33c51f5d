{{/*
The image tag: image.tag, else the chart's appVersion (`meridian install`
renders with its own version as appVersion).
*/}}
{{- define "meridian.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{/* An image reference: include "meridian.image" (list . "proxy"). */}}
{{- define "meridian.image" -}}
{{- $top := index . 0 -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $top.Values.image.registry) (index . 1) (include "meridian.tag" $top) -}}
{{- end -}}

{{/* Labels on every object of the control plane. */}}
{{- define "meridian.labels" -}}
app.kubernetes.io/part-of: meridian
app.kubernetes.io/version: {{ include "meridian.tag" . | quote }}
meridian.io/control-plane-version: {{ include "meridian.tag" . | quote }}
{{- end -}}

{{/* The controller's selector labels (immutable on the Deployment). */}}
{{- define "meridian.controllerSelector" -}}
app.kubernetes.io/name: meridian-controller
meridian.io/control-plane-component: controller
{{- end -}}

{{/* The controller's labels: Deployment, pod template, Service. */}}
{{- define "meridian.controllerLabels" -}}
{{ include "meridian.controllerSelector" . }}
app.kubernetes.io/component: controller
{{ include "meridian.labels" . }}
{{- end -}}

{{/*
Fails, saying which value is missing, unless the identity issuer is given
(identity.trustAnchorsPEM, identity.issuer.tlsCrtPEM and
identity.issuer.tlsKeyPEM) or made elsewhere (identity.externalIssuer=true).
*/}}
{{- define "meridian.validateIdentity" -}}
{{- if not .Values.identity.externalIssuer -}}
{{- $hint := "`meridian install` generates an issuer when none is given; with helm pass them, e.g. --set-file identity.trustAnchorsPEM=ca.crt --set-file identity.issuer.tlsCrtPEM=issuer.crt --set-file identity.issuer.tlsKeyPEM=issuer.key, or set identity.externalIssuer=true and create the Secret meridian-identity-issuer yourself (see the chart's README)" -}}
{{- range $name, $v := dict "identity.trustAnchorsPEM" .Values.identity.trustAnchorsPEM "identity.issuer.tlsCrtPEM" .Values.identity.issuer.tlsCrtPEM "identity.issuer.tlsKeyPEM" .Values.identity.issuer.tlsKeyPEM -}}
{{- if not $v -}}
{{- fail (printf "%s is required (the identity issuer's trust anchors, certificate and key) unless identity.externalIssuer=true: %s" $name $hint) -}}
{{- end -}}
{{- end -}}
{{- if not (contains "-----BEGIN CERTIFICATE-----" .Values.identity.trustAnchorsPEM) -}}
{{- fail "identity.trustAnchorsPEM must hold PEM certificates (-----BEGIN CERTIFICATE-----)" -}}
{{- end -}}
{{- if not (contains "-----BEGIN CERTIFICATE-----" .Values.identity.issuer.tlsCrtPEM) -}}
{{- fail "identity.issuer.tlsCrtPEM must hold a PEM certificate (-----BEGIN CERTIFICATE-----)" -}}
{{- end -}}
{{- if not (regexMatch "-----BEGIN ([A-Z]+ )?PRIVATE KEY-----" .Values.identity.issuer.tlsKeyPEM) -}}
{{- fail "identity.issuer.tlsKeyPEM must hold a PEM private key (-----BEGIN PRIVATE KEY-----, EC PRIVATE KEY or RSA PRIVATE KEY)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
